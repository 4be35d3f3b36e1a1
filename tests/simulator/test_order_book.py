"""The simulator's full order book: one update per change, a journal that goes back exactly."""

from __future__ import annotations

import random

import pytest

from simulator.order_book import ASK, BID, OrderBook
from simulator.stats import SCALE

TOP = (100 * SCALE, 5 * SCALE, 100 * SCALE + 10**6, 3 * SCALE)  # bid, qty, ask, qty


def make(levels: int = 6000, journal: int = 200_000) -> OrderBook:
    return OrderBook.around(TOP, 1_000, levels, journal, "test")


def test_a_new_book_is_its_top_of_book_and_as_deep_as_asked() -> None:
    book = make()
    assert book.best() == TOP
    assert [len(side) for side in book.sides] == [6000, 6000]
    bids, asks = (side.top() for side in book.sides)
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert all(q > 0 for _, q in bids + asks)
    assert book.update_id == book.oldest() == 1_000  # its making is no change


def test_every_change_is_one_update_and_a_no_change_is_none() -> None:
    book = make()
    price, qty = book.sides[BID].top(1)[0]
    assert book.change(BID, price, qty + 1) and book.update_id == 1_001
    assert not book.change(BID, price, qty + 1) and book.update_id == 1_001
    assert book.change(ASK, TOP[2], 0) and book.update_id == 1_002  # removed
    assert book.sides[ASK].top(1)[0][0] > TOP[2]
    assert not book.change(ASK, TOP[2], 0)  # removing what is not there changes nothing


def test_random_changes_keep_the_book_deep_uncrossed_and_near_its_price() -> None:
    book, rng = make(), random.Random(7)
    for _ in range(30_000):
        book.random_change(rng, trades=True)
    bid, _, ask, _ = book.best()
    assert bid < ask and ask - bid < 200 * book.tick
    assert [len(side) for side in book.sides] == [6000, 6000]
    assert 0.8 * TOP[0] < bid < 1.2 * TOP[0]


def test_the_journal_gives_the_book_back_at_every_update_id() -> None:
    book, rng = make(levels=500), random.Random(3)
    seen = {book.update_id: [side.top() for side in book.sides]}
    for _ in range(1_000):
        book.random_change(rng, trades=True)
        seen[book.update_id] = [side.top() for side in book.sides]
    assert book.update_id - 1_000 > 1_000  # some actions changed more than one level
    for update_id, sides in seen.items():
        assert [side.top() for side in book.at(update_id)] == sides, update_id
    assert [side.top() for side in book.sides] == seen[book.update_id]  # at() leaves the book alone


def test_the_journal_is_bounded() -> None:
    book, rng = make(levels=300, journal=1_000), random.Random(5)
    for _ in range(2_000):
        book.random_change(rng, trades=False)
    assert book.oldest() == book.update_id - 1_000
    book.at(book.oldest())
    with pytest.raises(LookupError):
        book.at(book.oldest() - 1)
    with pytest.raises(LookupError):
        book.at(book.update_id + 1)


def test_resize_and_set_top_are_changes_too() -> None:
    book, rng = make(levels=1000), random.Random(1)
    before = book.update_id
    book.resize(300, rng)
    assert [len(side) for side in book.sides] == [300, 300]
    assert book.update_id == before + 1400  # every level cancelled is an update
    assert [side.top() for side in book.at(before)] == [side.top() for side in make(levels=1000).sides]
    bid, ask = TOP[0] + 3 * 10**5, TOP[0] + 6 * 10**5  # a better bid, an ask inside the old spread
    book.set_top(bid, SCALE, ask, 2 * SCALE, rng)
    assert book.best() == (bid, SCALE, ask, 2 * SCALE)
    assert [len(side) for side in book.sides] == [300, 300]
