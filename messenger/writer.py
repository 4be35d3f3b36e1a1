"""The Redis writer: one thread that turns the book into keys, values and TTLs.

Changed values are written as soon as the previous write returns, so writes batch themselves
under load and stay immediate when quiet. Each record names the connection that vouches for it,
and each live connection's liveness key is rewritten well inside SNAPSHOT_TTL_MS: that, not the
values, is what keeps quiet values servable, so the steady work does not grow with the number of
keys (each is only renewed against leaks, every few minutes: contract.keys.RECORD_TTL_MS).
Values go out in one script (messenger.conditional), a batch in one round trip, each with its
TTL: a value replaces the stored one only if its order is newer, since other messengers may
write the same keys; otherwise this messenger's voucher joins the stored record. While no other
messenger writes (in one Redis), the small records go as plain SETs instead, fenced in Redis
(messenger.sole_writer). A key this messenger no longer vouches for is withdrawn from: deleted
unless another messenger's voucher in it is alive. A value that a live-push client watches is
also published on a channel named after its key when it replaces the stored one (an empty
message when it is deleted); the lists of trades are messenger.trade_history's. If Redis fails,
the writer retries with backoff and rewrites everything once it is back; the WebSocket
connections are not touched.

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
from collections.abc import Callable, Sequence
from typing import Any

import redis

from contract.keys import (
    CONTROL_TAG,
    RECORD_TTL_MS,
    VOUCHER_PREFIX,
    key_tag,
    member_key,
    member_streams_key,
    staged_key,
    voucher_key,
    voucher_prefix,
)
from contract.ordering import INT_ORDER, ORDER_LIMIT, encode_order
from contract.records import AS_OF, ORDER, TS, VOUCHER, encode_record
from contract.redis_client import Routes
from contract.resp import command
from messenger.backoff import Backoff
from messenger.book import Batch, Book
from messenger.conditional import SCRIPT, SCRIPT_KEYS, STAGE_BYTES, ScriptBatch, bulk
from messenger.histogram import Histogram
from messenger.resp import set_px
from messenger.sole_writer import (
    EXEC,
    MULTI,
    UNWATCH,
    WATCH,
    alone,
    plain_set,
    register,
    register_vouching,
    set_tail,
)
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
    return '{"' + VOUCHER + '":"' + VOUCHER_PREFIX + messenger


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
        alone: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__("redis-writer")
        self.book = book
        self.client = client
        self.ttl_ms = ttl_ms
        self.refresh_interval_s = refresh_interval_s
        self.messenger_id = messenger_id
        self._prefix = voucher_prefix(messenger_id)
        self._streams_key = member_streams_key(messenger_id)
        self._voucher_keys: dict[tuple[str, int, str], str] = {}  # made once: every batch names them
        # The buckets (hash tags, contract.keys) each connection has written records in since the
        # vouchers took their names: its liveness is written in each, beside the records.
        self._tagged: dict[int, set[str]] = {}
        self._staged_keys: dict[tuple[str, str], bytes] = {}
        self._written_keys: dict[str, tuple[str, bytes, bytes]] = {}  # key -> (tag, bytes, bulk)
        self.watched = watched
        self.status = status
        # Whether this member sees no other (messenger.membership): without that, the sole
        # writer's plain SETs are never tried (a member of an older version does not register).
        self.alone = alone
        # The last batch's answer, on the connection still open: no other messenger's voucher may
        # be live, and the WATCH that fences the next batch's plain SETs is set (messenger.sole_writer).
        self._sole = False
        self._registered_at = -1e9  # when the last registration was sent (monotonic)
        self._set_tail = set_tail(RECORD_TTL_MS)
        self.writes = 0
        self.deletes = 0
        self.replaced = 0  # records that replaced the stored one (the rest were older or equal)
        self.sole_writes = 0  # of those, written by plain SETs (messenger.sole_writer)
        self.sole_refused = 0  # batches whose plain SETs EXEC refused: another messenger joined
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
        self._routes = Routes(client)
        self._conns: dict[Any, Any] = {}  # the writer's own connections, by pool (one a node)
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
        """One batch in one round trip: liveness, withdrawals and values (scripts of SCRIPT_KEYS keys
        at most, or plain SETs while this messenger writes alone: messenger.sole_writer), stream
        states. Plain SETs refused (another messenger joined) go through the script at once, in a
        second round trip."""
        started = time.monotonic()
        cpu_started = time.thread_time()
        offset_ms = (time.time() - started) * 1000
        commands: list[bytes] = []
        routes: list[str] = []  # each command's hash tag: where it goes in a cluster

        def add(route: str, cmd: bytes) -> None:
            routes.append(route)
            commands.append(cmd)

        watched = self.watched()
        ttl = self.ttl_ms
        member = self.messenger_id
        # Vouchers only: they take a new name after every failure (see the module's docstring).
        messenger = f"{member}.{self.generation}" if self.generation else member
        # One script a bucket in a cluster (a script's keys are in one slot); one for the whole
        # batch elsewhere: each call costs Redis about what one more record does (~5 us measured).
        # A script of SCRIPT_KEYS keys is full (messenger.conditional): the next ones go in another.
        scripts: dict[str, ScriptBatch] = {}
        full: list[tuple[str, ScriptBatch]] = []
        single = self._routes.single
        # Plain SETs, fenced by the WATCH the last batch set on this connection (one Redis only).
        # Not either when this run's registration may have lapsed: renewing it would bump the counter
        # and make this batch's own EXEC refuse them (safe, but a waste).
        sole = (
            single
            and self._sole
            and started - self._registered_at < self.ttl_ms / 2000
            and (self.alone is None or self.alone())
        )
        fast: list[bytes] = []
        fast_records: list[tuple[bytes, bytes]] = []
        set_tail = self._set_tail
        for gone in batch.deletes:
            tag = CONTROL_TAG if single else key_tag(gone)
            script = scripts.get(tag)
            if script is None:
                script = scripts[tag] = ScriptBatch(RECORD_TTL_MS, self._prefix)
            script.withdraw(gone.encode(), gone in watched)
            if script.keys >= SCRIPT_KEYS:
                full.append((tag, scripts.pop(tag)))
        # A connection vouches in each bucket it has records in (contract.keys): the buckets new
        # to it in this batch, with when it was last heard.
        tagged = self._tagged
        new_tags: dict[tuple[int, str], float] = {}
        record_ttl = b"%d" % RECORD_TTL_MS
        renewals: list[tuple[str, bytes]] = []
        staging: list[tuple[str, bytes]] = []
        voucher_keys = self._voucher_keys
        written_keys = self._written_keys
        for w in batch.writes:
            # The per-record path (a flood writes nearly every frame): what depends on the key
            # alone is made once (its bucket, its bytes, its RESP bulk string).
            tag, key, bulk_key = written_keys.get(w.key) or self._key(w.key)
            if w.renew:
                renewals.append((tag, command("PEXPIRE", key, record_ttl)))
                continue
            conn_id = w.connection
            known = tagged.get(conn_id)
            if known is None:
                known = tagged[conn_id] = set()
            if tag not in known:
                known.add(tag)
                new_tags[conn_id, tag] = w.heard
            voucher = voucher_keys.get((messenger, conn_id, tag)) or self._voucher(messenger, conn_id, tag)
            order = w.order
            changed = w.changed
            heard = w.heard
            record = {
                VOUCHER: voucher,
                # encode_order's own case, inline: nearly every order is one int (an update id).
                ORDER: INT_ORDER % order
                if type(order) is int and 0 <= order < ORDER_LIMIT
                else encode_order(order),
                **w.fields,
                TS: int(changed * 1000 + offset_ms),
                # Known current when it arrived; the voucher carries when its connection spoke since.
                AS_OF: int((heard if heard > changed else changed) * 1000 + offset_ms),
                "source": w.source,
                "connection": conn_id,
            }
            value = encode_record(record)
            if sole and len(value) <= STAGE_BYTES and w.key not in watched:
                fast.append(plain_set(bulk_key, value, set_tail))
                fast_records.append((bulk_key, value))
                continue
            group = CONTROL_TAG if single else tag
            script = scripts.get(group)
            if script is None:
                script = scripts[group] = ScriptBatch(RECORD_TTL_MS, self._prefix)
            if len(value) > STAGE_BYTES:  # never through Lua: staged, then renamed into place
                staged = self._staged(messenger, w.key)
                staging.append((tag, set_px(staged, value, record_ttl)))
                closed = _superseded(record, w.superseded) if w.superseded else None
                script.write(key, staged, w.key in watched, closed, staged=True)
            elif w.key in watched:
                # Closed candles the value replaced, in order: each published if newer than what is stored.
                script.write(key, value, True, _superseded(record, w.superseded))
            else:
                script.write_plain(bulk_key, value)
            if script.keys >= SCRIPT_KEYS:
                full.append((group, scripts.pop(group)))
        # Liveness first: a record is never written before the connection it names is live.
        vouching: list[tuple[str, str, int]] = []
        for conn_id, heard in batch.vouchers.items():
            for tag in tagged.get(conn_id, ()):
                new_tags[conn_id, tag] = heard  # a live connection's word, in each of its buckets
        for (conn_id, tag), heard in new_tags.items():
            vouching.append((tag, self._voucher(messenger, conn_id, tag), int(heard * 1000 + offset_ms)))
        every_script = [*full, *scripts.items()]
        # In one Redis, this run registers before any record, its vouchers written in the same script
        # (messenger.sole_writer): other writers know it may have live vouchers for as long as it does.
        if single and vouching:
            add(CONTROL_TAG, register_vouching(member, ttl, [(v, word) for _, v, word in vouching]))
            self._registered_at = started
        elif single and (fast or every_script or renewals or batch.deletes):
            add(CONTROL_TAG, register(member, ttl))
            self._registered_at = started
        else:
            for tag, voucher, word in vouching:
                add(tag, command("SET", voucher, word, "PX", ttl))
        for tag, cmd in staging:
            add(tag, cmd)
        exec_at = None
        if fast:
            add(CONTROL_TAG, MULTI)
            for cmd in fast:
                add(CONTROL_TAG, cmd)
            exec_at = len(commands)
            add(CONTROL_TAG, EXEC)
        first_script = len(commands)
        for tag, script in every_script:
            add(tag, script.command())
        for tag, cmd in renewals:
            add(tag, cmd)
        for conn_id in batch.retired_vouchers:
            for tag in tagged.pop(conn_id, ()):
                add(tag, command("DEL", self._voucher(messenger, conn_id, tag)))
        # After the values: a key the server finds "live" has its first value written already.
        streams_key = self._streams_key
        if batch.streams_complete:
            add(CONTROL_TAG, command("DEL", streams_key))
        states = [item for k, v in batch.streams.items() if v is not None for item in (k, v)]
        if states:
            add(CONTROL_TAG, command("HSET", streams_key, *states))
        dropped = [k for k, v in batch.streams.items() if v is None]
        if dropped:
            add(CONTROL_TAG, command("HDEL", streams_key, *dropped))
        if batch.heartbeat is not None:
            heartbeat = {**batch.heartbeat, "ts": int(time.time() * 1000)}
            add(CONTROL_TAG, command("SET", member_key(member), encode_record(heartbeat), "PX", ttl))
        alone_at = len(commands) + 1 + (exec_at is None) if single and commands else None
        if alone_at is not None:
            commands.extend(self._ask_alone(member, exec_at is None))
            routes.extend([CONTROL_TAG] * (len(commands) - len(routes)))
        self._sole = False  # until this batch's answer is read, on a connection still open
        guarded = exec_at is not None
        try:
            replies = self._send(commands, routes, batch.streams_complete, guarded)
        except redis.exceptions.NoScriptError:
            # Redis restarted, a replica was promoted, or it never had it: load it (on every
            # primary of a cluster), send again; unless plain SETs went with it: their WATCH is
            # spent, so they are not sent again (a failure: everything is rewritten, by the script).
            self.client.script_load(SCRIPT)
            if guarded:
                raise
            replies = self._send(commands, routes, batch.streams_complete)
        for replaced, joined, _deleted in replies[first_script : first_script + len(every_script)]:
            self.replaced += replaced
            self.joined += joined
        if exec_at is not None and replies[exec_at] is None:
            self.sole_refused += 1
            logger.info("redis: plain SETs refused (another messenger writes too); through the script")
            self._write_refused(fast_records, member)
        else:
            self.replaced += len(fast)
            self.sole_writes += len(fast)
            if alone_at is not None:
                self._sole = replies[alone_at] == 1
        done = self._last_write = time.monotonic()
        cpu = time.thread_time() - cpu_started
        self._interval = min(MAX_WRITE_INTERVAL_S, max(MIN_WRITE_INTERVAL_S, cpu))
        self.latency.observe_many([done - w.changed for w in batch.writes if w.update])
        self.writes += len(batch.writes)
        self.deletes += len(batch.deletes)
        self.batches += 1
        if not self.healthy:
            logger.info("redis: connected; writing")
        self.healthy = True
        self._backoff.reset()

    @staticmethod
    def _ask_alone(member: str, unwatch: bool) -> list[bytes]:
        """Whether the next batch may write plain SETs: WATCH first, so that anyone joining after the
        answer makes the next EXEC refuse them (an EXEC ended the last WATCH, or UNWATCH does)."""
        return [*([UNWATCH] if unwatch else []), WATCH, alone(member)]

    def _write_refused(self, records: list[tuple[bytes, bytes]], member: str) -> None:
        """The plain SETs EXEC refused, through the script: this run registered already, in this
        batch, with its vouchers and before its records (messenger.sole_writer)."""
        commands = [register(member, self.ttl_ms)]
        for start in range(0, len(records), SCRIPT_KEYS):
            script = ScriptBatch(RECORD_TTL_MS, self._prefix)
            for bulk_key, value in records[start : start + SCRIPT_KEYS]:
                script.write_plain(bulk_key, value)
            commands.append(script.command())
        commands.extend(self._ask_alone(member, True))
        replies = self._send(commands, [CONTROL_TAG] * len(commands), False)
        for replaced, joined, _deleted in replies[1:-3]:
            self.replaced += replaced
            self.joined += joined
        self._sole = replies[-1] == 1

    def _voucher(self, messenger: str, conn_id: int, tag: str) -> str:
        """A connection's voucher key in one bucket, made once (forgotten wholesale now and then:
        connections and generations come and go)."""
        key = self._voucher_keys.get((messenger, conn_id, tag))
        if key is None:
            if len(self._voucher_keys) >= 16384:
                self._voucher_keys.clear()
            key = self._voucher_keys[messenger, conn_id, tag] = voucher_key(messenger, conn_id, tag)
        return key

    def _key(self, key: str) -> tuple[str, bytes, bytes]:
        """A written key's hash tag (contract.keys.key_tag), bytes and RESP bulk string, made once
        (as ``_voucher``)."""
        if len(self._written_keys) >= 65536:
            self._written_keys.clear()
        raw = key.encode()
        made = self._written_keys[key] = (key_tag(key), raw, bulk(raw))
        return made

    def _staged(self, messenger: str, key: str) -> bytes:
        """The key a large record of ``key`` is staged under, made once (as ``_voucher``)."""
        staged = self._staged_keys.get((messenger, key))
        if staged is None:
            if len(self._staged_keys) >= 65536:
                self._staged_keys.clear()
            staged = self._staged_keys[messenger, key] = staged_key(messenger, key).encode()
        return staged

    def _send(
        self, commands: list[bytes], routes: list[str], everything: bool, guarded: bool = False
    ) -> list[Any]:
        """Send commands (messenger.resp) and return every reply, in order; the first error reply
        is raised once all are read (after NOSCRIPT the connections stay: the script is loaded and
        the batch sent again on them; after any other they are dropped).

        Each command goes to the node serving its route (a hash tag: contract.redis_client.Routes),
        in one round trip when that is one node (one Redis, Sentinel). In a cluster, the commands of
        the nodes holding values go first, all at once, and the control slot's (the stream states,
        the heartbeat: always last in a batch) once those are answered: a key the server finds
        "live" has its first value written already, whichever node holds it.

        On a connection made since the last write only ``everything`` (a full rewrite) is sent, and
        never ``guarded`` plain SETs (their WATCH was on the connection that is gone); anything else
        raises Reconnected. On any error every connection is dropped, so no unread
        reply is left on one.
        """
        if not commands:  # liveness of connections with no record yet: nothing names it
            return []
        pool = self._routes.pool
        if self._routes.single:  # one Redis (or Sentinel's primary): every command on one connection
            groups: dict[Any, list[int]] = {pool(CONTROL_TAG): list(range(len(commands)))}
        else:
            groups = {}
            for i, route in enumerate(routes):
                groups.setdefault(pool(route), []).append(i)
        replies: list[Any] = [None] * len(commands)
        try:
            conns = {p: self._connection(p) for p in groups}
            if self._fresh and (guarded or not everything):
                raise Reconnected("connected anew since the last write")
            if len(groups) == 1:
                stages = [list(groups)]
            else:  # the control slot's node last, unless it holds values too
                control = pool(CONTROL_TAG)
                last = [control] if routes[-1] == CONTROL_TAG and control in groups else []
                stages = [[p for p in groups if p not in last], last]
            for stage in stages:
                for p in stage:
                    sent = commands if len(groups) == 1 else [commands[i] for i in groups[p]]
                    conns[p].send_packed_command([b"".join(sent)], check_health=False)  # no reconnect here
                for p in stage:
                    conn = conns[p]
                    for i in groups[p]:
                        try:
                            replies[i] = conn.read_response()
                        except redis.ResponseError as exc:  # an error reply: the others are still read
                            replies[i] = exc
        except BaseException:
            self._release()
            raise
        self._fresh = False  # every reply read: the connections are ours and clean
        for reply in replies:
            if isinstance(reply, redis.exceptions.NoScriptError):
                raise reply
            if isinstance(reply, redis.ResponseError):  # READONLY (a demoted primary), MOVED, ...:
                self._release()  # the next connections ask the sentinels (or the cluster) anew
                self._routes.refresh()
                raise reply
        return replies

    def _connection(self, pool: Any) -> Any:
        """The writer's connection from ``pool``, connected. Kept out of the pool until it fails:
        it is only ever made again after a failure, and nothing else using the pool can reconnect
        it between two writes."""
        conn = self._conns.get(pool)
        if conn is None:
            conn = self._conns[pool] = pool.get_connection()
            conn.register_connect_callback(self._connected)
            self._fresh = True
        conn.connect()  # a no-op when connected: a reconnect is known before anything is sent
        return conn

    def _release(self) -> None:
        self._sole = False  # the WATCH was on these connections
        conns, self._conns = self._conns, {}
        for pool, conn in conns.items():
            conn.deregister_connect_callback(self._connected)  # back in the pool: not ours any more
            conn.disconnect()
            pool.release(conn)

    def _connected(self, conn: Any) -> None:
        """redis-py calls this whenever the writer's connection is (re)made."""
        self._fresh = True
        self._sole = False

    def _failed(self, exc: redis.RedisError) -> None:
        self.errors += 1
        self._sole = False
        self.generation += 1  # new voucher names: none is written in any bucket yet
        self._tagged = {}
        self._routes.refresh()  # a node gone, a replica promoted: where each slot is served now
        if isinstance(exc, Reconnected):
            logger.info("redis: %s; rewriting everything", exc)
        elif self.healthy or self.errors == 1:
            logger.warning("redis: write failed (%s); retrying with backoff", exc)
        self.healthy = False


def _superseded(record: dict[str, Any], closed: Sequence[tuple[Any, dict[str, Any]]]) -> list[bytes]:
    """The closed candles a record replaced, as published: the record with each one's fields and order."""
    return [encode_record({**record, ORDER: encode_order(order), **fields}) for order, fields in closed]
