"""The Redis writer: one thread that turns the book into keys, values and TTLs.

Changed values are written as soon as the previous write returns, so writes batch themselves
under load and stay immediate when quiet. Each record names the connection that vouches for it,
and each live connection's liveness key is rewritten well inside SNAPSHOT_TTL_MS: that, not the
values, is what keeps quiet values servable, so the steady work does not grow with the number of
keys (each is only renewed against leaks, every few minutes: contract.keys.RECORD_TTL_MS).
Values go out in one script (messenger.conditional), a batch in one round trip, each with its
TTL: a value replaces the stored one only if its order is newer, since other messengers may
write the same keys; otherwise this messenger's voucher joins the stored record. A key this
messenger no longer vouches for is withdrawn from: deleted unless another messenger's voucher
in it is alive. A value that a live-push client watches is also published on a channel named
after its key when it replaces the stored one (an empty message when it is deleted); the lists
of trades are messenger.trade_history's. If Redis fails, the writer retries with backoff and
rewrites everything once it is back; the WebSocket connections are not touched.

What Redis held before a failure may not be what the writer last wrote: a restarted Redis holds
nothing, and a replica promoted by a Sentinel failover misses the writes the old primary
acknowledged but had not passed on yet, so it serves older records under live vouchers. Two rules
make the rewrite the only way back. A write on a connection made since the last write (redis-py
reconnects silently, to whichever primary the sentinels name) is refused before it is sent and
becomes a failure. After a failure the vouchers take new names (a new generation): every record
rewritten names them, and a record left from before names a voucher nobody renews any more, which
expires within SNAPSHOT_TTL_MS. So a reader that meets the rewrite half done, or a record the
rewrite does not reach, never pairs an old record with a live voucher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from contract.keys import (
    RECORD_TTL_MS,
    VOUCHER_KEY_TEMPLATE,
    member_key,
    member_streams_key,
    staged_key,
    voucher_key,
    voucher_prefix,
)
from contract.ordering import encode_order
from contract.records import AS_OF, ORDER, TS, VOUCHER, encode_record
from messenger.backoff import Backoff
from messenger.book import Batch, Book
from messenger.conditional import SCRIPT, STAGE_BYTES, ScriptBatch
from messenger.histogram import Histogram
from messenger.resp import command, set_px
from messenger.worker import Worker

logger = logging.getLogger(__name__)

# A write waits at least as long after the previous one as that one took of this thread's CPU
# (its wall time is mostly Redis's answer, with the GIL free), and at least 0.5 ms (at most 4):
# light load is written within a millisecond, a flood of a few symbols coalesces (only a key's
# latest value is written), and the writer never holds most of the one GIL. (Waiting as long as
# the wall time made a batch every 4 ms at 20,000 frames/s, from 1.3 ms batches of 0.4 ms CPU:
# the messenger's median frame-to-Redis was 3 ms.)
MIN_WRITE_INTERVAL_S = 0.0005
MAX_WRITE_INTERVAL_S = 0.004
# Records are renewed once a third of their TTL has passed since they were last written.
RECORD_RENEW_S = RECORD_TTL_MS / 3000


def records_start(messenger: str) -> str:
    """How every record this member writes starts, whatever its vouchers' generation: its voucher
    comes first (contract.servable), named after the member, then ``:`` or ``.<generation>:``."""
    voucher = VOUCHER_KEY_TEMPLATE.format(messenger=messenger, connection="").removesuffix(":")
    return '{"' + VOUCHER + '":"' + voucher


class Reconnected(redis.ConnectionError):
    """The writer's connection was made anew since its last write: the Redis behind it may hold
    something else than was written (restarted, or a promoted replica)."""


class Writer(Worker):
    """Writes the book to Redis from its own thread until stopped."""

    def __init__(
        self,
        book: Book,
        client: redis.Redis,
        ttl_ms: int,
        refresh_interval_s: float,
        messenger_id: str,
        watched: Callable[[], frozenset[str]] = frozenset,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__("redis-writer")
        self.book = book
        self.client = client
        self.ttl_ms = ttl_ms
        self.refresh_interval_s = refresh_interval_s
        self.messenger_id = messenger_id
        self._prefix = voucher_prefix(messenger_id)
        self._streams_key = member_streams_key(messenger_id)
        self._voucher_keys: dict[tuple[str, int], str] = {}  # made once: every batch names them
        self._staged_keys: dict[tuple[str, str], bytes] = {}
        self.watched = watched
        self.status = status
        self.writes = 0
        self.deletes = 0
        self.replaced = 0  # records that replaced the stored one (the rest were older or equal)
        self.joined = 0  # records whose stored value stayed, the writer's voucher added to it
        self.batches = 0
        self.errors = 0
        self.healthy = False
        self.latency = Histogram()  # frame received -> value acknowledged by Redis
        self._last_write = 0.0
        self._interval = MIN_WRITE_INTERVAL_S
        # Capped low: a Redis back (a restart, a new primary) is written to within half a second of
        # answering, and a retry costs one connection attempt (and a question to each sentinel).
        self._backoff = Backoff(0.05, 0.5)
        # Bumped by every failure: the vouchers written after it have names of their own.
        self.generation = 0
        self._conn: Any = None  # the writer's own connection, from the pool
        self._fresh = True  # that connection was made since: only a full rewrite may use it

    def stop(self, timeout_s: float = 2.0) -> None:
        """Write what is pending (deletions of invalidated keys included), then stop."""
        super().stop()
        self.book.wake.set()
        self._thread.join(timeout_s)
        self._release()
        self.client.close()

    def run(self) -> None:
        """Write changes at once and announce live connections, until stopped."""
        everything = True
        next_heartbeat = next_announce = time.monotonic()
        # Liveness keys are one per connection, so they are rewritten every half refresh interval
        # (a sixth of their TTL): waking that often, a live connection's liveness survives the
        # writer being held up (a starved core, a long batch) for over half its TTL. Every batch
        # also renews the records written RECORD_RENEW_S ago or more, spread out over time.
        wake_every = self.refresh_interval_s / 2
        while True:
            self.book.wake.wait(wake_every)
            self.book.wake.clear()
            stopping = self._stopping.is_set()
            now = time.monotonic()
            # Let changes gather for a moment (see MIN_WRITE_INTERVAL_S).
            wait = self._last_write + self._interval - now
            if wait > 0 and not stopping:
                time.sleep(wait)
                now = time.monotonic()
            announce = now >= next_announce
            if announce:
                next_announce = now + wake_every
            batch = self.book.take(now, now - RECORD_RENEW_S, everything, announce)
            if now >= next_heartbeat and self.status is not None:
                batch.heartbeat = self.status()
                next_heartbeat = now + self.refresh_interval_s
            if batch:
                try:
                    self.write(batch)
                except redis.RedisError as exc:
                    self._failed(exc)
                    everything = True
                    if stopping:
                        return
                    if not isinstance(exc, Reconnected):  # Redis answers: rewrite at once
                        self._stopping.wait(self._backoff.next_delay())
                    continue
                everything = False
            if stopping:
                return

    def write(self, batch: Batch) -> None:
        """One batch in one round trip: liveness, withdrawals and values (one script), stream states."""
        started = time.monotonic()
        cpu_started = time.thread_time()
        offset_ms = (time.time() - started) * 1000
        commands: list[bytes] = []
        add = commands.append
        watched = self.watched()
        ttl = self.ttl_ms
        member = self.messenger_id
        # Vouchers only: they take a new name after every failure (see the module's docstring).
        messenger = f"{member}.{self.generation}" if self.generation else member
        # Liveness first: a record is never written before the connection it names is live.
        for conn_id, heard in batch.vouchers.items():
            add(command("SET", self._voucher(messenger, conn_id), int(heard * 1000 + offset_ms), "PX", ttl))
        script = ScriptBatch(RECORD_TTL_MS, self._prefix)
        for gone in batch.deletes:
            script.withdraw(gone.encode(), gone in watched)
        record_ttl = b"%d" % RECORD_TTL_MS
        renewals: list[bytes] = []
        staging: list[bytes] = []
        vouchers: dict[int, str] = {}
        for w in batch.writes:
            key = w.key.encode()
            if w.renew:
                renewals.append(command("PEXPIRE", key, record_ttl))
                continue
            voucher = vouchers.get(w.connection)
            if voucher is None:
                voucher = vouchers[w.connection] = self._voucher(messenger, w.connection)
            record = {
                VOUCHER: voucher,
                ORDER: encode_order(w.order),
                **w.fields,
                TS: int(w.changed * 1000 + offset_ms),
                # Known current when it arrived; the voucher carries when its connection spoke since.
                AS_OF: int(max(w.heard, w.changed) * 1000 + offset_ms),
                "source": w.source,
                "connection": w.connection,
            }
            value = encode_record(record)
            if len(value) > STAGE_BYTES:  # never through Lua: staged, then renamed into place
                staged = self._staged(messenger, w.key)
                staging.append(set_px(staged, value, record_ttl))
                closed = _superseded(record, w.superseded) if w.superseded else None
                script.write(key, staged, w.key in watched, closed, staged=True)
            elif w.key in watched:
                # Closed candles the value replaced, in order: each published if newer than what is stored.
                script.write(key, value, True, _superseded(record, w.superseded))
            else:
                script.write(key, value, False)
        if script:
            commands.extend(staging)
            add(script.command())
        commands.extend(renewals)
        if batch.retired_vouchers:
            add(command("DEL", *(voucher_key(messenger, conn_id) for conn_id in batch.retired_vouchers)))
        # After the values: a key the server finds "live" has its first value written already.
        streams_key = self._streams_key
        if batch.streams_complete:
            add(command("DEL", streams_key))
        states = [item for k, v in batch.streams.items() if v is not None for item in (k, v)]
        if states:
            add(command("HSET", streams_key, *states))
        dropped = [k for k, v in batch.streams.items() if v is None]
        if dropped:
            add(command("HDEL", streams_key, *dropped))
        if batch.heartbeat is not None:
            heartbeat = {**batch.heartbeat, "ts": int(time.time() * 1000)}
            add(command("SET", member_key(member), encode_record(heartbeat), "PX", ttl))
        try:
            replies = self._send(commands, batch.streams_complete)
        except redis.exceptions.NoScriptError:
            self.client.script_load(SCRIPT)  # Redis restarted (or never had it): load it, send again
            replies = self._send(commands, batch.streams_complete)
        if script:
            replaced, joined, _deleted = replies[len(batch.vouchers) + len(staging)]
            self.replaced += replaced
            self.joined += joined
        done = self._last_write = time.monotonic()
        cpu = time.thread_time() - cpu_started
        self._interval = min(MAX_WRITE_INTERVAL_S, max(MIN_WRITE_INTERVAL_S, cpu))
        for w in batch.writes:
            if w.update:
                self.latency.observe(done - w.changed)
        self.writes += len(batch.writes)
        self.deletes += len(batch.deletes)
        self.batches += 1
        if not self.healthy:
            logger.info("redis: connected; writing")
        self.healthy = True
        self._backoff.reset()

    def _voucher(self, messenger: str, conn_id: int) -> str:
        """A connection's voucher key, made once (forgotten wholesale now and then: connections
        and generations come and go)."""
        key = self._voucher_keys.get((messenger, conn_id))
        if key is None:
            if len(self._voucher_keys) >= 4096:
                self._voucher_keys.clear()
            key = self._voucher_keys[messenger, conn_id] = voucher_key(messenger, conn_id)
        return key

    def _staged(self, messenger: str, key: str) -> bytes:
        """The key a large record of ``key`` is staged under, made once (as ``_voucher``)."""
        staged = self._staged_keys.get((messenger, key))
        if staged is None:
            if len(self._staged_keys) >= 65536:
                self._staged_keys.clear()
            staged = self._staged_keys[messenger, key] = staged_key(messenger, key).encode()
        return staged

    def _send(self, commands: list[bytes], everything: bool) -> list[Any]:
        """Send commands (messenger.resp) in one round trip and return every reply; the first error
        reply is raised once all are read (after NOSCRIPT the connection stays: the script is loaded
        and the batch sent again on it; after any other the connection is dropped).

        On a connection made since the last write only ``everything`` (a full rewrite) is sent;
        anything else raises Reconnected. On any error the connection is dropped, so no unread
        reply is left on it.
        """
        conn = self._conn
        if conn is None:
            # Kept out of the pool until it fails: it is only ever made again after a failure,
            # and nothing else using the pool can reconnect it between two writes.
            conn = self._conn = self.client.connection_pool.get_connection()
            conn.register_connect_callback(self._connected)
            self._fresh = True
        try:
            conn.connect()  # a no-op when connected: a reconnect is known before anything is sent
            if self._fresh and not everything:
                raise Reconnected("connected anew since the last write")
            conn.send_packed_command([b"".join(commands)])
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:  # an error reply: the others are still read
                    replies.append(exc)
        except BaseException:
            self._release()
            raise
        self._fresh = False  # every reply read: the connection is ours and clean
        for reply in replies:
            if isinstance(reply, redis.exceptions.NoScriptError):
                raise reply
            if isinstance(reply, redis.ResponseError):  # READONLY (a demoted primary) and the like:
                self._release()  # the next connection asks the sentinels anew
                raise reply
        return replies

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.deregister_connect_callback(self._connected)  # back in the pool: not ours any more
            conn.disconnect()
            self.client.connection_pool.release(conn)

    def _connected(self, conn: Any) -> None:
        """redis-py calls this whenever the writer's connection is (re)made."""
        self._fresh = True

    def _failed(self, exc: redis.RedisError) -> None:
        self.errors += 1
        self.generation += 1
        if isinstance(exc, Reconnected):
            logger.info("redis: %s; rewriting everything", exc)
        elif self.healthy or self.errors == 1:
            logger.warning("redis: write failed (%s); retrying with backoff", exc)
        self.healthy = False


def _superseded(record: dict[str, Any], closed: list[tuple[Any, dict[str, Any]]]) -> list[bytes]:
    """The closed candles a record replaced, as published: the record with each one's fields and order."""
    return [encode_record({**record, ORDER: encode_order(order), **fields}) for order, fields in closed]
