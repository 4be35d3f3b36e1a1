"""What users asked for: the server's demand set, read on a thread of its own.

The server scores ``<kind>:<SYMBOL>`` in a sorted set with the time of its last request and
publishes a wake-up; this reader takes the whole set on each wake-up (or every half second,
in case one was missed) so the supervisor sees it without ever waiting on Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from contract.keys import DEMAND_CHANNEL, DEMAND_KEY, WATCHED_KEY
from contract.order_book import WANTED_KEY, parse_wanted_member
from contract.redis_client import recover
from messenger.backoff import Backoff
from messenger.worker import Worker

logger = logging.getLogger(__name__)

POLL_S = 0.5


class DemandReader(Worker):
    """``latest``: member -> last request (epoch ms); ``version`` moves on with every change.

    ``watched``: the keys live-push clients follow now (their updates are published).
    ``book_levels``: SYMBOL -> the deepest tier of its order book asked for lately (contract.order_book).
    """

    def __init__(self, client: redis.Redis, idle_s: float) -> None:
        super().__init__("demand")
        self.client = client
        self.idle_s = idle_s
        self.latest: dict[str, float] = {}
        self.watched: frozenset[str] = frozenset()
        self.book_levels: dict[str, int] = {}
        self.version = 0
        self._forget: set[str] = set()
        self._lock = threading.Lock()
        self._backoff = Backoff(0.1, 5.0)

    def forget(self, members: list[str]) -> None:
        """Drop members that name nothing we can stream (done by the reader thread)."""
        with self._lock:
            self._forget.update(members)

    def run(self) -> None:
        """Read on every wake-up, and every POLL_S in case one was missed."""
        while not self._stopping.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(DEMAND_CHANNEL)
                while not self._stopping.is_set():
                    pubsub.get_message(timeout=POLL_S)
                    while pubsub.get_message(timeout=0.0) is not None:
                        pass  # a burst of wake-ups needs one read
                    self._read()
                    self._backoff.reset()
            except redis.RedisError as exc:
                delay = self._backoff.next_delay()
                logger.warning("demand: reading failed (%s); retrying in %.1f s", exc, delay)
                self._drop_idle()
                recover(self.client)
                self._stopping.wait(delay)
            finally:
                pubsub.close()

    def _drop_idle(self) -> None:
        """Drop what went idle from ``latest`` while Redis cannot be read (each read drops it in
        Redis, and ``latest`` follows): the streams nobody uses go, whether Redis answers or not
        (the planner plans again when ``version`` moves, not every so often)."""
        idle_before_ms = round(time.time() * 1000 - self.idle_s * 1000)
        latest = {member: last_ms for member, last_ms in self.latest.items() if last_ms >= idle_before_ms}
        if len(latest) != len(self.latest):
            self.latest = latest
            self.version += 1

    def _read(self) -> None:
        with self._lock:
            forget, self._forget = self._forget, set()
        try:
            self._read_forgetting(forget)
        except BaseException:
            with self._lock:  # asked again by the next read: a forget is never lost to a failed one
                self._forget |= forget
            raise

    def _read_forgetting(self, forget: set[str]) -> None:
        if forget:
            self.client.zrem(DEMAND_KEY, *forget)
        now_ms = time.time() * 1000
        idle_before_ms = round(now_ms - self.idle_s * 1000)
        # Idle ones go by score, so a request that just came in is never removed with them.
        self.client.zremrangebyscore(DEMAND_KEY, "-inf", f"({idle_before_ms}")
        self.client.zremrangebyscore(WATCHED_KEY, "-inf", f"({now_ms:.0f}")
        watching: Any = self.client.zrange(WATCHED_KEY, 0, -1)
        self.watched = frozenset(k.decode() if isinstance(k, bytes) else str(k) for k in watching)
        self.client.zremrangebyscore(WANTED_KEY, "-inf", f"({idle_before_ms}")
        wanted: Any = self.client.zrange(WANTED_KEY, 0, -1)
        levels: dict[str, int] = {}
        for raw in wanted:
            parsed = parse_wanted_member(raw.decode() if isinstance(raw, bytes) else str(raw))
            if parsed is not None:
                levels[parsed[0]] = max(levels.get(parsed[0], 0), parsed[1])
        self.book_levels = levels
        rows: Any = self.client.zrange(DEMAND_KEY, 0, -1, withscores=True)
        latest = {m.decode() if isinstance(m, bytes) else str(m): float(s) for m, s in rows}
        self._restore(latest, forget, idle_before_ms)
        if latest != self.latest:
            self.latest = latest
            self.version += 1

    def _restore(self, latest: dict[str, float], forgotten: set[str], idle_before_ms: int) -> None:
        """Put back what Redis lost (a restart, a flush) of the demand this reader last saw.

        Only this reader removes members (idle or forgotten ones); any other it knew of that is
        gone now was lost, not dropped. Each goes back with the time of its last request, so a
        stream in use keeps flowing and an idle one still goes DEMAND_IDLE_S after that request.
        GT keeps a newer request the server may have written meanwhile.
        """
        lost = {
            member: last_ms
            for member, last_ms in self.latest.items()
            if member not in latest and member not in forgotten and last_ms >= idle_before_ms
        }
        if not lost:
            return
        self.client.zadd(DEMAND_KEY, lost, gt=True)
        latest.update(lost)
        logger.warning("demand: restored %d requested stream(s) Redis had lost (restarted?)", len(lost))
