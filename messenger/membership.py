"""This messenger as one member of the service: registered in Redis, and what it sees of the others.

Every ``interval_s`` (on a thread of its own, so the supervisor never waits on Redis) the member
renews its registration (contract.keys.MEMBERS_KEY, scored by when it is to be presumed dead:
now + LIVENESS_TIMEOUT_MS), says what it pins (WANTS_KEY), and reads who else is live and who is
leaving. Streams are owned by rendezvous hashing over the live members that are not leaving
(messenger.ownership): ``eligible``. A member that stops cleanly first marks itself leaving, so
the others take its streams while it still carries them, then deregisters.

For make before break it also answers which of the streams this member is letting go of another
live member reports ``live`` already (``handed_over``: this member then stops writing them), and
which of those another member has written since (``taken``: this member may let go, and
withdrawing its own record then deletes nothing another member vouches for). Members dead for
long are swept (their registration, wants and stream states), by whichever member notices first.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
import redis

from contract.keys import (
    LEAVING_KEY,
    LIVE,
    MEMBERS_KEY,
    RECORD_TTL_MS,
    WANTS_KEY,
    key_tag,
    member_key,
    member_streams_key,
)
from contract.redis_client import queue_script
from messenger.backoff import Backoff
from messenger.worker import Worker

logger = logging.getLogger(__name__)

# Of KEYS, those whose record another member vouches for too: it names a voucher that is not this
# member's (ARGV[1]: how this member's records start: '{"voucher":"' and its vouchers' prefix).
THEIRS_LUA = """
local mine, out = string.sub(ARGV[1], 13), {}
local function ours(voucher)
  if string.sub(voucher, 1, #mine) ~= mine then return false end
  local after = string.sub(voucher, #mine + 1, #mine + 1)
  return after == ':' or after == '.'
end
for _, key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', key, 0, 1023)
  local named = string.match(head, '^{"voucher":"([^"]*)"')
  if named then
    for voucher in string.gmatch(named, '%S+') do
      if not ours(voucher) then out[#out + 1] = key break end
    end
  end
end
return out
"""
# A muted key is looked at only after this long: a write of it the writer had in flight when it
# was muted has landed by then.
MUTE_SETTLE_S = 0.1
# A member presumed dead this long ago has its leftovers removed: until then what it streamed reads
# as streamed (contract.members), so its symbols answer 500, not 503, as its records may linger.
SWEEP_AFTER_MS = RECORD_TTL_MS


class Membership(Worker):
    """``eligible``: the members streams are spread over (live, not leaving), this one included
    unless it is leaving; ``live``: every live member; ``wants``: member -> what it pins;
    ``version`` moves on with every change of those."""

    def __init__(
        self,
        client: redis.Redis,
        member: str,
        liveness_ms: int,
        interval_s: float,
        wants: dict[str, Any],
        records_start: str = "",
    ) -> None:
        super().__init__("membership")
        self.client = client
        self.member = member
        self.liveness_ms = liveness_ms
        self.interval_s = interval_s
        self.own_wants = wants
        self.live: tuple[str, ...] = (member,)
        self.eligible: tuple[str, ...] = (member,)
        self.wants: dict[str, dict[str, Any]] = {member: wants}
        self.version = 0  # 0 until the first read: nothing is planned before
        self.leaving = False
        self.handed_over: frozenset[str] = frozenset()
        self.asked: frozenset[str] = frozenset()  # keys to look for on other members (set by the owner)
        # Keys no longer written here (set by the owner), since when; ``taken``: those of them whose
        # record in Redis another member wrote since.
        self.muted: dict[str, float] = {}
        self.taken: frozenset[str] = frozenset()
        self._records_start = records_start
        self._theirs = client.register_script(THEIRS_LUA)
        self.read = threading.Event()  # set after each read
        self._wake = threading.Event()
        self._lock = threading.Lock()  # the view changes on this thread and in leave()
        self._backoff = Backoff(0.1, 2.0)

    def leave(self) -> None:
        """Own nothing from now on: the others take this member's streams (make before break)."""
        with self._lock:
            self.leaving = True
            self.eligible = tuple(m for m in self.eligible if m != self.member)
            self.version += 1
        self.read.clear()
        self._wake.set()  # say so at once

    def run(self) -> None:
        """Renew and read every ``interval_s`` until stopped; then deregister."""
        try:
            while not self._stopping.is_set():
                try:
                    self.round()
                    self._backoff.reset()
                    delay = self.interval_s
                except redis.RedisError as exc:
                    delay = self._backoff.next_delay()
                    logger.warning("member %s: renewal failed (%s); retrying in %.1f s",
                                   self.member, exc, delay)  # fmt: skip
                self._wake.wait(delay)
                self._wake.clear()
        finally:
            self._deregister()

    def round(self) -> None:
        """One renewal and read (one round trip, and one more while handing over)."""
        now = int(time.time() * 1000)
        expiry = now + self.liveness_ms
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(MEMBERS_KEY, {self.member: expiry})
        if self.leaving:
            pipe.zadd(LEAVING_KEY, {self.member: expiry})
        pipe.hset(WANTS_KEY, self.member, orjson.dumps(self.own_wants))
        pipe.zrangebyscore(MEMBERS_KEY, f"({now}", "+inf")
        pipe.zrangebyscore(LEAVING_KEY, f"({now}", "+inf")
        pipe.hgetall(WANTS_KEY)
        pipe.zrangebyscore(MEMBERS_KEY, "-inf", f"({now - SWEEP_AFTER_MS}")
        *_, live_raw, leaving_raw, wants_raw, dead_raw = pipe.execute()
        live = sorted({_text(m) for m in live_raw} | {self.member})
        leaving = {_text(m) for m in leaving_raw}
        if self.leaving:
            leaving.add(self.member)
        eligible = tuple(m for m in live if m not in leaving)
        wants: dict[str, dict[str, Any]] = {self.member: self.own_wants}
        for member, raw in wants_raw.items():
            name = _text(member)
            if name in live and name != self.member:
                try:
                    wants[name] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
        self._handovers([m for m in eligible if m != self.member])
        with self._lock:
            if self.leaving:  # leave() may have come since the start of this round
                eligible = tuple(m for m in eligible if m != self.member)
            if (tuple(live), eligible, wants) != (self.live, self.eligible, self.wants):
                joined = set(live) - set(self.live)
                gone = set(self.live) - set(live)
                if self.version and (joined or gone):
                    logger.info("member %s: members now %s (+%s -%s)", self.member, ", ".join(live),
                                ",".join(sorted(joined)) or "0", ",".join(sorted(gone)) or "0")  # fmt: skip
                self.live, self.eligible, self.wants = tuple(live), eligible, wants
                self.version += 1
            elif not self.version:
                self.version = 1
        dead = [_text(m) for m in dead_raw]
        if dead:
            self._sweep(dead)
        self.read.set()

    def _handovers(self, others: list[str]) -> None:
        """Which asked-for keys another member reports live."""
        asked = sorted(self.asked)
        if not asked or not others:
            self.handed_over = self.taken = frozenset()
            return
        pipe = self.client.pipeline(transaction=False)
        for member in others:
            pipe.hmget(member_streams_key(member), asked)
        done: set[str] = set()
        for states in pipe.execute():
            done.update(k for k, s in zip(asked, states, strict=True) if _text(s) == LIVE)
        self.handed_over = frozenset(done)
        settled = time.monotonic() - MUTE_SETTLE_S
        muted = [k for k, since in list(self.muted.items()) if since <= settled and k in done]
        theirs: list[Any] = []
        if muted:
            # One script a bucket: its keys share a slot (contract.keys).
            by_tag: dict[str, list[str]] = {}
            for key in muted:
                by_tag.setdefault(key_tag(key), []).append(key)
            pipe = self.client.pipeline(transaction=False)
            for keys in by_tag.values():
                queue_script(pipe, self._theirs, keys, [self._records_start])
            for found in pipe.execute():
                theirs.extend(found)
        self.taken = frozenset(_text(k) for k in theirs)

    def _sweep(self, dead: list[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(MEMBERS_KEY, *dead)
        pipe.zrem(LEAVING_KEY, *dead)
        pipe.hdel(WANTS_KEY, *dead)
        pipe.delete(*(member_streams_key(m) for m in dead), *(member_key(m) for m in dead))
        pipe.execute()
        logger.info("member %s: swept %d member(s) dead for over %d s", self.member, len(dead),
                    SWEEP_AFTER_MS // 1000)  # fmt: skip

    def _deregister(self) -> None:
        """Gone cleanly: the others drop this member now rather than after the liveness timeout.

        It stays registered, as dead, until swept: what it streamed still reads as streamed.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(MEMBERS_KEY, {self.member: int(time.time() * 1000)}, xx=True)
        pipe.zrem(LEAVING_KEY, self.member)
        pipe.hdel(WANTS_KEY, self.member)
        pipe.delete(member_key(self.member))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("member %s: could not deregister (%s); dropped once presumed dead",
                           self.member, exc)  # fmt: skip

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop renewing, and deregister."""
        super().stop()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        else:
            self._deregister()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
