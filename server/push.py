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

import queue
import time
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from contract import kinds
from contract.keys import snapshot_key
from contract.records import ORDER, VOUCHER, MalformedRecord, decode_record
from contract.servable import servable
from server import admission, books, lookup, metrics
from server.books import BookReader
from server.errors import ApiError
from server.hub import POLL_S, Hub
from server.shutdown import Shutdown
from server.store import SnapshotStore, StoreUnavailable
from server.views import RETRY, Given, parse_kind, parse_limit, parse_symbol, settings, store
from server.views import books as books_reader

bp = Blueprint("push", __name__)

HEARTBEAT_S = 3.0


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
    ttl_s = settings().snapshot_ttl_ms / 1000
    follower: Follower
    if name == kinds.DEPTH:
        # An order book's top levels only (default 100, at most 5,000 a side).
        follower = BookFollower(
            hub(), books_reader(), exchange_symbol, parse_limit(Given(dict(request.args))), ttl_s
        )
    else:
        key = snapshot_key(key_kind, exchange_symbol)
        follower = Follower(hub(), snapshots, key, key_kind, exchange_symbol, ttl_s)
    try:
        first = follower.read()
        if first is None:
            _explain_or_ask(snapshots, key_kind, exchange_symbol)
    except StoreUnavailable:
        raise ApiError(503, "Data store unavailable; try again shortly.", RETRY) from None
    return Response(
        follower.events(first),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _explain_or_ask(snapshots: SnapshotStore, key_kind: str, symbol: str) -> None:
    """A 404/409/503 now if the stream can never start; ask for it if nobody streams it yet."""
    decode = books.served if key_kind == books.KIND else servable
    [found] = snapshots.lookup(key_kind, [symbol], decode)
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
        self._sent: Any = None
        self.stale = True

    def events(self, first: Any) -> Iterator[str]:
        """The SSE text: the current value if any, then one event per change, staleness, heartbeats."""
        inbox = self.hub.watch(self.key)
        try:
            yield "retry: 1000\n\n"
            if first is not None:
                yield from self._value(first)
            heard = beat = time.monotonic()
            while not Shutdown.stopping:
                try:
                    data: bytes | None = inbox.get(timeout=POLL_S)
                except queue.Empty:
                    data = None
                now = time.monotonic()
                self._tick()
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
            value = self._decode(data)
        except MalformedRecord:
            return
        yield from self._value(value)

    def _decode(self, data: bytes) -> Any:
        """A published record: just written, so its connection vouched for it a moment ago."""
        record = decode_record(data)
        record.pop(VOUCHER, None)
        record.pop(ORDER, None)
        return record

    def read(self) -> Any:
        """The value now, read through the read rule (None if there is none)."""
        [record] = self.snapshots.snapshots(self.kind, [self.symbol])
        return record

    def _mark(self, value: Any) -> Any:
        """What tells one value from the next: an event is sent when it changes."""
        return value["ts"]

    def _snapshot(self, value: Any) -> str:
        return _event("snapshot", lookup.with_age(value, self.symbol, None))

    def _tick(self) -> None:
        """Called at least every POLL_S while the client follows."""

    def _value(self, value: Any) -> Iterator[str]:
        mark = self._mark(value)
        if self.stale or mark != self._sent:
            self.stale, self._sent = False, mark
            yield self._snapshot(value)

    def _check(self) -> Iterator[str]:
        try:
            value = self.read()
        except StoreUnavailable:
            yield from self._gone("the data store is unavailable")
            return
        if value is None:
            yield from self._gone("its stream is not live")
        else:
            yield from self._value(value)

    def _gone(self, why: str) -> Iterator[str]:
        if not self.stale:
            self.stale = True
            metrics.STALE.labels("push").inc()
            yield _event("stale", {"status_code": 500, "error": f"No current data for {self.symbol}: {why}."})


class BookFollower(Follower):
    """One client's event stream of an order book's top ``limit`` levels (server.books): an event
    when they change, never the whole record."""

    def __init__(self, hub: Hub, reader: BookReader, symbol: str, limit: int, ttl_s: float) -> None:
        super().__init__(hub, reader.store, snapshot_key(books.KIND, symbol), books.KIND, symbol, ttl_s)
        self.reader, self.limit = reader, limit

    def _decode(self, data: bytes) -> Any:
        return books.published(data)

    def read(self) -> Any:
        return self.reader.read(self.symbol, self.limit)

    def _mark(self, value: Any) -> Any:
        return hash(value.top(self.limit))

    def _snapshot(self, value: Any) -> str:
        return _event("snapshot", value.record(self.limit))

    def _tick(self) -> None:
        self.reader.want(self.symbol, self.limit)

    def _gone(self, why: str) -> Iterator[str]:
        if not self.stale:
            metrics.DEPTH_UNAVAILABLE.labels("gone").inc()
        yield from super()._gone(why)
