"""Live push: ``GET /stream/<SYMBOL>[/<kind>]`` as Server-Sent Events.

Each update of the stream's value is one ``snapshot`` event (the record, as ``POST /snapshot``
answers it); a ``stale`` event says when the value can no longer be vouched for, and the next
``snapshot`` that it is current again. A comment line every few seconds keeps proxies and
clients from timing out.

Updates come from Redis pub/sub, not polling: each worker process has one hub, with one
pub/sub connection, that fans messages out to its clients. The hub lists the keys it follows
in ``transmute:watched`` so the messenger publishes those (and only those). If messages stop
for longer than the TTL (the messenger died and could not say so), the key is read once to
tell whether the value is gone.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, current_app

from contract import kinds
from contract.keys import DEMAND_CHANNEL, WATCHED_KEY, snapshot_key
from contract.records import VOUCHER, MalformedRecord, decode_record
from server import admission, lookup, metrics
from server.errors import ApiError
from server.store import SnapshotStore, StoreUnavailable
from server.views import RETRY, parse_kind, parse_symbol, settings, store

logger = logging.getLogger(__name__)

bp = Blueprint("push", __name__)

HEARTBEAT_S = 3.0
POLL_S = 0.25
WATCH_TTL_S = 30.0  # a hub that stops renewing its keys (crashed) is forgotten after this
RENEW_S = 10.0
QUEUE_SIZE = 64


class Hub:
    """One Redis pub/sub connection per process, fanning updates out to live-push clients."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._queues: dict[str, set[queue.Queue[bytes]]] = {}
        self._changes: queue.Queue[tuple[bool, str]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, key: str) -> queue.Queue[bytes]:
        """Follow a key: its messages arrive on the returned queue until ``unwatch``."""
        inbox: queue.Queue[bytes] = queue.Queue(QUEUE_SIZE)
        with self._lock:
            first = key not in self._queues
            self._queues.setdefault(key, set()).add(inbox)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="push-hub", daemon=True)
                self._thread.start()
        if first:
            self._changes.put((True, key))
            self._register([key], wake=True)
        return inbox

    def unwatch(self, key: str, inbox: queue.Queue[bytes]) -> None:
        """Stop following a key for this client."""
        with self._lock:
            inboxes = self._queues.get(key)
            if inboxes is None:
                return
            inboxes.discard(inbox)
            if inboxes:
                return
            del self._queues[key]
        self._changes.put((False, key))

    def _register(self, keys: list[str], wake: bool = False) -> None:
        """Tell the messenger these keys are followed (for WATCH_TTL_S), so it publishes them."""
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(WATCHED_KEY, dict.fromkeys(keys, int((time.time() + WATCH_TTL_S) * 1000)))
        if wake:
            pipe.publish(DEMAND_CHANNEL, "watch")
        try:
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("push: could not register followed keys (%s)", exc)

    def _run(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                with self._lock:
                    keys = list(self._queues)
                pubsub.subscribe(*keys, "transmute:hub")  # one channel always, so it can listen
                renewed = time.monotonic()
                while True:
                    self._apply_changes(pubsub)
                    message = pubsub.get_message(timeout=POLL_S)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
                    if time.monotonic() - renewed >= RENEW_S:
                        with self._lock:
                            self._register(list(self._queues))
                        renewed = time.monotonic()
            except redis.RedisError as exc:
                logger.warning("push: pub/sub connection lost (%s); reconnecting", exc)
                time.sleep(1.0)
            finally:
                pubsub.close()

    def _apply_changes(self, pubsub: Any) -> None:
        while True:
            try:
                add, key = self._changes.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                followed = key in self._queues
            if add and followed:
                pubsub.subscribe(key)
            elif not add and not followed:
                pubsub.unsubscribe(key)

    def _dispatch(self, channel: bytes | str, data: bytes) -> None:
        key = channel.decode() if isinstance(channel, bytes) else channel
        with self._lock:
            inboxes = list(self._queues.get(key, ()))
        for inbox in inboxes:
            # A slow client misses an intermediate value; the next one supersedes it.
            with contextlib.suppress(queue.Full):
                inbox.put_nowait(data)


def hub() -> Hub:
    """This process's hub (made by the factory, started on first use)."""
    instance: Hub = current_app.extensions["transmute.hub"]
    return instance


def _event(name: str, doc: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {orjson.dumps(doc).decode()}\n\n"


@bp.get("/stream/<symbol>")
@bp.get("/stream/<symbol>/<kind>")
def stream(symbol: str, kind: str = kinds.BOOK_TICKER) -> Response:
    """Follow one stream of a symbol as Server-Sent Events."""
    exchange_symbol, name = parse_symbol(symbol), parse_kind(kind)
    key_kind = kinds.key_kind(name)
    snapshots = store()
    try:
        [first] = snapshots.snapshots(key_kind, [exchange_symbol])
        if first is None:
            _explain_or_ask(snapshots, key_kind, exchange_symbol)
    except StoreUnavailable:
        raise ApiError(503, "Data store unavailable; try again shortly.", RETRY) from None
    key = snapshot_key(key_kind, exchange_symbol)
    follower = Follower(hub(), snapshots, key, key_kind, exchange_symbol, settings().snapshot_ttl_ms / 1000)
    return Response(
        follower.events(first),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _explain_or_ask(snapshots: SnapshotStore, key_kind: str, symbol: str) -> None:
    """A 404/409/503 now if the stream can never start; ask for it if nobody streams it yet."""
    [found] = snapshots.lookup(key_kind, [symbol])
    if found.record is not None or found.stream_state is not None:
        return  # current, or streamed: the stream says when it is (again)
    if not found.catalog_loaded:
        raise ApiError(503, "The symbol list is not loaded yet; try again shortly.", RETRY)
    if found.status is None:
        raise ApiError(404, str(lookup.UnknownSymbol(symbol, snapshots.suggest(symbol))))
    if found.status != lookup.TRADING:
        raise ApiError(409, str(lookup.NotTrading(symbol, found.status)))
    if found.stream_state is None:
        try:
            admission.ask(snapshots, key_kind, [symbol])
        except admission.Refused as exc:
            raise ApiError(429, str(exc), exc.headers) from None


class Follower:
    """One client's event stream."""

    def __init__(
        self, hub: Hub, snapshots: SnapshotStore, key: str, kind: str, symbol: str, ttl_s: float
    ) -> None:
        self.hub, self.snapshots = hub, snapshots
        self.key, self.kind, self.symbol, self.ttl_s = key, kind, symbol, ttl_s
        self._sent_ts: int | None = None
        self.stale = True

    def events(self, first: dict[str, Any] | None) -> Iterator[str]:
        """The SSE text: the current value if any, then one event per change, staleness, heartbeats."""
        inbox = self.hub.watch(self.key)
        try:
            yield "retry: 1000\n\n"
            if first is not None:
                yield from self._value(first)
            heard = beat = time.monotonic()
            while True:
                try:
                    data: bytes | None = inbox.get(timeout=POLL_S)
                except queue.Empty:
                    data = None
                now = time.monotonic()
                if data is not None:
                    heard = now
                    yield from self._message(data)
                elif not self.stale and now - heard > self.ttl_s + POLL_S:
                    # Silence past the TTL: the messenger may have died without a word.
                    heard = now
                    yield from self._check()
                if now - beat >= HEARTBEAT_S:
                    beat = now
                    yield f": heartbeat {int(time.time() * 1000)}\n\n"
        finally:
            self.hub.unwatch(self.key, inbox)

    def _message(self, data: bytes) -> Iterator[str]:
        if not data:
            yield from self._gone("its stream is not live")
            return
        try:
            record = decode_record(data)
        except MalformedRecord:
            return
        record.pop(VOUCHER, None)  # just written: its connection vouched for it a moment ago
        yield from self._value(record)

    def _value(self, record: dict[str, Any]) -> Iterator[str]:
        if self.stale or record["ts"] != self._sent_ts:
            self.stale, self._sent_ts = False, record["ts"]
            yield _event("snapshot", lookup.with_age(record, self.symbol, None))

    def _check(self) -> Iterator[str]:
        try:
            [record] = self.snapshots.snapshots(self.kind, [self.symbol])
        except StoreUnavailable:
            yield from self._gone("the data store is unavailable")
            return
        if record is None:
            yield from self._gone("its stream is not live")
        else:
            yield from self._value(record)

    def _gone(self, why: str) -> Iterator[str]:
        if not self.stale:
            self.stale = True
            metrics.STALE.labels("push").inc()
            yield _event("stale", {"status_code": 500, "error": f"No current data for {self.symbol}: {why}."})
