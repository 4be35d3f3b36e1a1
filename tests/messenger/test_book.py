"""The freshness rules: ordering by update id, vouching, seeds, invalidation, make before break."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from contract.keys import snapshot_key
from contract.trade_history import tail_key
from messenger.book import Book

KEY = snapshot_key("bookticker", "btcusdt")
QUIET = snapshot_key("bookticker", "bnbbtc")
_ids = itertools.count(1)


@dataclass(eq=False)
class Conn:
    """Stands in for a connection: the book only reads its id and when it was last heard."""

    last_heard: float = 0.0
    id: int = field(default_factory=lambda: next(_ids))


def on(book: Book, *conns: Conn, since: float = 0.0) -> None:
    """The supervisor assigned KEY and QUIET to each of ``conns``, subscribed since ``since``."""
    for conn in conns:
        book.assign(conn, [KEY, QUIET])
        book.carry(conn, [KEY, QUIET], since)


def fields(bid: str, u: int | None = None) -> dict[str, object]:
    return {"symbol": "BTCUSDT", "bid_price": bid, "update_id": u}


def written(book: Book, now: float, refresh: float | None = None) -> dict[str, str]:
    batch = book.take(now, refresh)
    out = {w.key: str(w.fields["bid_price"]) for w in batch.writes}
    out.update({k: "DELETED" for k in batch.deletes})
    return out


def test_newer_update_is_written_older_and_duplicate_are_dropped() -> None:
    book, conn = Book(5.0), Conn(last_heard=1.0)
    on(book, conn)
    assert book.on_frame(conn, KEY, 10, fields("1.0", 10), 1.0)
    assert not book.on_frame(conn, KEY, 9, fields("0.9", 9), 1.1)
    assert not book.on_frame(conn, KEY, 10, fields("1.0", 10), 1.2)
    assert written(book, 1.2) == {KEY: "1.0"}
    assert book.on_frame(conn, KEY, 11, fields("1.1", 11), 1.3)
    assert written(book, 1.3) == {KEY: "1.1"}
    assert book.older_dropped == 2


def test_overlapping_connections_never_take_a_value_back() -> None:
    book, old, new = Book(5.0), Conn(1.0), Conn(1.0)
    on(book, old, new)
    book.on_frame(old, KEY, 100, fields("1.00", 100), 1.0)
    book.on_frame(new, KEY, 100, fields("1.00", 100), 1.0)  # the same event on both
    book.on_frame(new, KEY, 101, fields("1.01", 101), 1.1)
    book.on_frame(old, KEY, 101, fields("1.01", 101), 1.2)
    book.on_frame(old, KEY, 99, fields("0.99", 99), 1.3)  # late, older
    assert written(book, 1.3) == {KEY: "1.01"}


def test_a_quiet_value_is_refreshed_while_its_connection_is_heard_from() -> None:
    book, conn = Book(5.0), Conn(1.0)
    on(book, conn)
    book.carry(conn, [KEY], since=1.0)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), 1.0)
    written(book, 1.0)
    conn.last_heard = 3.0  # a pong, minutes of silence from the symbol itself
    batch = book.take(3.0, refresh_older_than=3.0)
    assert [(w.key, w.changed, w.heard) for w in batch.writes] == [(KEY, 1.0, 3.0)]


def test_a_silent_connection_vouches_for_nothing_even_before_it_is_declared_dead() -> None:
    book, conn = Book(5.0), Conn(1.0)
    on(book, conn)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), 1.0)
    written(book, 1.0)
    assert written(book, 6.5, refresh=6.5) == {}  # heard 5.5 s ago: left to expire


def test_a_silent_connection_heard_again_has_its_values_refreshed_again() -> None:
    book, conn = Book(5.0), Conn(1.0)
    on(book, conn)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), 1.0)
    written(book, 1.0)
    assert written(book, 6.5, refresh=6.5) == {}
    conn.last_heard = 7.0  # a late pong, before the connection was given up
    assert written(book, 7.0, refresh=7.0) == {KEY: "1.0"}


def test_refreshes_come_due_one_by_one_not_all_at_once() -> None:
    book, conn = Book(5.0), Conn(1.0)
    on(book, conn)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), 1.0)
    written(book, 1.0)
    book.on_frame(conn, QUIET, 1, {**fields("2.0", 1), "symbol": "BNBBTC"}, 2.0)
    conn.last_heard = 2.0
    written(book, 2.0)
    conn.last_heard = 3.0
    assert written(book, 3.0, refresh=1.5) == {KEY: "1.0"}  # only the one written before 1.5
    assert written(book, 3.1, refresh=2.5) == {QUIET: "2.0"}
    assert written(book, 3.2, refresh=2.5) == {}  # both written since


def test_losing_the_last_voucher_deletes_the_key_at_once() -> None:
    book, a, b, c = Book(5.0), Conn(1.0), Conn(1.0), Conn(1.0)
    on(book, a, b, c)
    for conn in (a, b, c):
        book.on_frame(conn, KEY, 1, fields("1.0", 1), 1.0)
    [first] = book.take(1.0, None).writes
    named = next(conn for conn in (a, b, c) if conn.id == first.connection)
    bystander, last = (conn for conn in (a, b, c) if conn is not named)
    assert book.release(bystander) == []
    assert written(book, 1.1) == {}  # Redis names one that still vouches: nothing to do
    assert book.release(named) == []
    [write] = book.take(1.2, None).writes  # the last one still vouches: Redis must name it now
    assert (write.key, write.connection, write.renew) == (KEY, last.id, False)
    book.release(last)
    assert written(book, 1.3) == {KEY: "DELETED"}


def test_a_seed_fills_a_quiet_symbol_after_a_reconnect() -> None:
    book, old = Book(5.0), Conn(1.0)
    on(book, old)
    book.on_frame(old, QUIET, 5, fields("5.0", 5), 1.0)
    book.release(old)
    written(book, 1.0)
    new = Conn(2.0)
    book.assign(new, [KEY, QUIET])
    assert book.carry(new, [QUIET], since=2.0) == [QUIET]
    assert book.seed(new, QUIET, fields("5.5"), requested_at=2.1, now=2.2)
    assert written(book, 2.2) == {QUIET: "5.5"}
    # The stream takes over from the next update on: u from before the drop still orders.
    assert not book.on_frame(new, QUIET, 4, fields("4.0", 4), 2.3)
    assert book.on_frame(new, QUIET, 6, fields("6.0", 6), 2.4)
    assert written(book, 2.4) == {QUIET: "6.0"}


def test_a_seed_never_overwrites_a_streamed_value() -> None:
    book, conn = Book(5.0), Conn(1.0)
    on(book, conn)
    book.carry(conn, [KEY], since=1.0)
    book.on_frame(conn, KEY, 7, fields("7.0", 7), 1.2)  # arrives while the REST call is out
    assert not book.seed(conn, KEY, fields("6.9"), requested_at=1.1, now=1.3)
    assert written(book, 1.3) == {KEY: "7.0"}


def test_a_seed_for_a_connection_that_died_is_not_applied() -> None:
    book, conn = Book(5.0), Conn(1.0)
    on(book, conn)
    book.carry(conn, [KEY], since=1.0)
    book.release(conn)
    assert not book.seed(conn, KEY, fields("1.0"), requested_at=1.1, now=1.2)
    assert written(book, 1.2) == {}


def test_make_before_break_hands_over_when_the_old_connection_is_heard_after_the_subscribe() -> None:
    book, old = Book(5.0), Conn(1.0)
    on(book, old)
    book.on_frame(old, QUIET, 1, fields("1.0", 1), 1.0)
    new = Conn(2.0)
    book.assign(new, [KEY, QUIET])
    assert book.carry(new, [QUIET], since=2.0) == []  # old vouches: no seed needed
    assert book.inherit() == 0  # old not heard since new subscribed: not yet
    old.last_heard = 2.1  # old answers a ping: nothing changed before 2.0 went missing
    assert book.inherit() == 1
    book.release(old)
    assert written(book, 2.2, refresh=2.2) == {QUIET: "1.0"}


def test_no_handover_from_a_connection_that_went_silent() -> None:
    book, old = Book(5.0), Conn(1.0)
    on(book, old)
    book.on_frame(old, QUIET, 1, fields("1.0", 1), 1.0)
    new = Conn(3.0)
    book.assign(new, [KEY, QUIET])
    book.carry(new, [QUIET], since=3.0)
    assert book.inherit() == 0
    reseed = book.release(old)  # declared dead
    assert reseed == [(new, QUIET)]
    assert written(book, 3.1) == {QUIET: "DELETED"}


def test_a_key_invalidated_then_vouched_again_is_written_not_deleted() -> None:
    book, a, b = Book(5.0), Conn(1.0), Conn(1.0)
    on(book, a, b)
    book.on_frame(a, KEY, 1, fields("1.0", 1), 1.0)
    written(book, 1.0)
    book.release(a)
    book.on_frame(b, KEY, 2, fields("2.0", 2), 1.1)
    assert written(book, 1.1) == {KEY: "2.0"}


def test_unsubscribing_some_keys_lets_go_of_those_only() -> None:
    book, conn = Book(5.0), Conn(1.0)
    on(book, conn)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), 1.0)
    book.on_frame(conn, QUIET, 1, fields("2.0", 1), 1.0)
    written(book, 1.0)
    book.release(conn, [QUIET])
    assert written(book, 1.1) == {QUIET: "DELETED"}
    assert book.vouched_keys(conn) == {KEY}


def test_after_redis_comes_back_everything_is_rewritten_and_dead_keys_deleted() -> None:
    book, a, b = Book(5.0), Conn(1.0), Conn(1.0)
    on(book, a, b)
    book.on_frame(a, KEY, 1, fields("1.0", 1), 1.0)
    book.on_frame(b, QUIET, 1, fields("2.0", 1), 1.0)
    written(book, 1.0)
    book.release(b)
    batch = book.take(1.5, None, everything=True)
    assert [w.key for w in batch.writes] == [KEY]
    assert batch.deletes == [QUIET]


def test_a_connection_let_go_of_cannot_bring_a_value_back() -> None:
    book, conn = Book(5.0), Conn(1.0)
    on(book, conn)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), 1.0)
    written(book, 1.0)
    book.release(conn)  # closed or declared dead; its reader thread may still hold a frame
    assert not book.on_frame(conn, KEY, 2, fields("2.0", 2), 1.1)
    assert book.carry(conn, [KEY], since=1.1) == []
    assert written(book, 1.2, refresh=1.2) == {KEY: "DELETED"}


TRADES = tail_key("trade", "btcusdt")


def trade(n: int) -> dict[str, object]:
    return {"symbol": "BTCUSDT", "trade_id": n}


def test_every_accepted_trade_goes_to_the_kept_list_once_in_order() -> None:
    book, conn, other = Book(5.0), Conn(1.0), Conn(1.0)
    kept: list[tuple[str, object]] = []
    book.on_item = lambda key, item: kept.append((key, item["trade_id"]))
    on(book, conn)
    on(book, other)
    book.on_frame(conn, KEY, 10, trade(10), 1.1, TRADES)
    book.on_frame(other, KEY, 10, trade(10), 1.15, TRADES)  # the same trade on an overlapping connection
    book.on_frame(other, KEY, 11, trade(11), 1.2, TRADES)
    book.on_frame(conn, KEY, 11, trade(11), 1.25, TRADES)
    book.on_frame(conn, KEY, 9, trade(9), 1.3, TRADES)  # older: never goes back
    assert kept == [(TRADES, 10), (TRADES, 11)]
    book.release(conn)
    book.release(other)
    assert book.take(1.5, None).deletes == [KEY]  # the list stays: trades are history
