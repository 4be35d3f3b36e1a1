"""A stream given up can never be vouched for again, whatever its reader thread does meanwhile.

Found under load: after idle streams were unsubscribed, some keys stayed vouched and renewed
for hours, and ``POST /snapshot/ADXETH`` served a value the exchange had replaced seconds
before. A reader thread had looked a frame's route up just before the supervisor took the
stream back, and handed the frame to the book just after. These tests drive each such
interleaving by hand, with the real supervisor, connection and book (no socket: the reader's
steps are called in the order the race produced).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from contract.settings import Settings
from messenger.binance import BOOK_TICKER
from messenger.book import Book
from messenger.connection import OPEN, Connection
from messenger.routes import route_for
from messenger.supervisor import Supervisor

STREAM = "adxeth@bookTicker"


class NoSeeder:
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.rest = SimpleNamespace(ip_wait_until=0.0)  # Binance never asked us to wait

    def request(self, conn: Any, routes: Any) -> None:
        self.requests.append((conn, routes))


def frame(u: int) -> dict[str, Any]:
    return {"u": u, "s": "ADXETH", "b": f"0.000{u}", "B": "10.0", "a": f"0.001{u}", "A": "5.0"}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[Supervisor, Book, Connection]:
    monkeypatch.setattr(Connection, "start", lambda self: None)  # no socket; we play the reader
    book = Book(liveness_timeout_s=5.0)
    supervisor = Supervisor(Settings.from_env({}), book, NoSeeder())  # type: ignore[arg-type]
    route = route_for("ADXETH", BOOK_TICKER)
    pinned = route_for("BTCUSDT", BOOK_TICKER)  # keeps the connection open when ADXETH goes
    supervisor.want([route, pinned])
    supervisor.tick(time.monotonic())
    [conn] = supervisor.conns
    conn.state, conn.last_heard = OPEN, time.monotonic()
    # The exchange confirmed the subscriptions.
    conn._confirmed([STREAM, pinned.stream], time.monotonic())
    deliver(conn, route, 1)
    [write] = book.take(time.monotonic(), None).writes
    assert write.key == route.key
    return supervisor, book, conn


def deliver(conn: Connection, route: Any, u: int) -> bool:
    """The reader's last step: a parsed frame handed to the book (route looked up before)."""
    order, fields = route.kind.parse(frame(u), route.symbol)
    return conn.book.on_frame(conn, route.key, order, fields, time.monotonic(), route.history_key)


def renewed_later(book: Book, conn: Connection, key: str) -> bool:
    """Would the writer write or renew ``key`` an hour later, the connection still talking?"""
    far = time.monotonic() + 3600
    conn.last_heard = far - 1
    batch = book.take(far - 1, refresh_older_than=far, announce=True)
    return any(w.key == key for w in batch.writes)


def taken_back(supervisor: Supervisor, book: Book) -> Any:
    """The stream went idle: taken back, its deletion written. Returns its route."""
    route = supervisor.routes[STREAM]
    supervisor.unwant([STREAM])
    book.take(time.monotonic(), None)
    return route


def test_a_frame_looked_up_before_unsubscribe_and_delivered_after_cannot_vouch(
    world: tuple[Supervisor, Book, Connection],
) -> None:
    supervisor, book, conn = world
    route = supervisor.routes[STREAM]  # the reader found the route ...
    supervisor.unwant([STREAM])  # ... the stream went idle and was taken back ...
    conn.last_heard = time.monotonic()
    assert not deliver(conn, route, 2)  # ... and then the reader handed its frame over
    batch = book.take(time.monotonic(), None)
    assert route.key in batch.deletes
    assert not any(w.key == route.key for w in batch.writes)
    assert not renewed_later(book, conn, route.key)
    assert route.key not in book.vouched_keys(conn)


def test_a_subscribe_reply_read_before_unsubscribe_and_applied_after_cannot_bring_it_back(
    world: tuple[Supervisor, Book, Connection],
) -> None:
    supervisor, book, conn = world
    route = taken_back(supervisor, book)
    # The reader had checked the stream was still carried, then applied the confirmation.
    assert book.carry(conn, [route.key], time.monotonic()) == []
    conn.last_heard = time.monotonic()
    book.inherit()
    assert not deliver(conn, route, 3)
    assert not renewed_later(book, conn, route.key)


def test_the_stream_wanted_again_is_vouched_for_only_after_its_new_subscription(
    world: tuple[Supervisor, Book, Connection],
) -> None:
    supervisor, book, conn = world
    route = taken_back(supervisor, book)
    supervisor.want([route])
    supervisor.tick(time.monotonic())  # placed on the same connection again: SUBSCRIBE queued
    assert supervisor.owner[STREAM] is conn
    assert not deliver(conn, route, 4)  # a trailing frame of the old subscription
    assert not renewed_later(book, conn, route.key)
    conn._confirmed([STREAM], time.monotonic())  # the new subscription is confirmed
    assert deliver(conn, route, 5)
    assert renewed_later(book, conn, route.key)
