"""One symbol's local book: exact levels only, in price order, against a reference book."""

from __future__ import annotations

import random

import orjson
import pytest

from messenger.local_book import BadLevel, LocalBook, price_key


def fmt(price: int) -> str:
    return f"{price // 10**8}.{price % 10**8:08d}"


def reference_top(levels: dict[int, int], n: int, descending: bool) -> list[list[str]]:
    prices = sorted(levels, reverse=descending)[:n]
    return [[fmt(p), fmt(levels[p])] for p in prices]


def served(book: LocalBook, n: int) -> tuple[list[list[str]], list[list[str]], tuple[bool, bool]]:
    bids, asks, partial = book.top(n)
    return orjson.loads(b"[" + b",".join(bids) + b"]"), orjson.loads(b"[" + b",".join(asks) + b"]"), partial


def snapshot(bids: dict[int, int], asks: dict[int, int], limit: int, update_id: int) -> dict[str, object]:
    return {
        "lastUpdateId": update_id,
        "bids": reference_top(bids, limit, True),
        "asks": reference_top(asks, limit, False),
    }


def test_price_keys_order_decimals_exactly() -> None:
    prices = ["0.00000001", "0.0000001", "1", "1.0", "1.00000001", "99999999.99999999", "100000000"]
    keys = [price_key(p) for p in prices]
    assert keys == sorted(keys)
    assert price_key("1") == price_key("1.00000000")
    # 17 significant digits: a float would call these equal.
    assert price_key("12345678.12345678") != price_key("12345678.12345679")
    for bad in ("", "1e5", "-1", "1.2.3", "abc", " 1", "1." + "0" * 17):
        with pytest.raises(BadLevel):
            price_key(bad)


def test_a_whole_book_follows_random_changes_level_for_level() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    bids = {10_000 * 10**8 - i * 10**6: rng.randrange(1, 10**9) for i in range(300)}
    asks = {10_001 * 10**8 + i * 10**6: rng.randrange(1, 10**9) for i in range(300)}
    book = LocalBook(snapshot(bids, asks, 5000, 7), 5000)  # the whole book: no boundary
    for u in range(8, 3000):
        changes: tuple[list[list[str]], list[list[str]]] = ([], [])
        for side, levels, base, sign in ((0, bids, 10_000, -1), (1, asks, 10_001, 1)):
            for _ in range(rng.randrange(0, 6)):
                price = base * 10**8 + sign * rng.randrange(0, 400) * 10**6
                qty = 0 if rng.random() < 0.4 else rng.randrange(1, 10**9)
                if qty:
                    levels[price] = qty
                else:
                    levels.pop(price, None)  # removing a level not held happens, and is normal
                changes[side].append([fmt(price), fmt(qty)])
        book.apply(changes[0], changes[1], u)
        n = rng.choice((1, 5, 100, 1000))
        expected = (reference_top(bids, n, True), reference_top(asks, n, False), (False, False))
        assert served(book, n) == expected
    assert book.update_id == 2999


def test_levels_behind_a_full_snapshot_are_never_held() -> None:
    bids = {100 * 10**8 - i * 10**8: 1 for i in range(50)}  # 100 down to 51
    asks = {101 * 10**8 + i * 10**8: 1 for i in range(50)}  # 101 up to 150
    book = LocalBook(snapshot(bids, asks, 10, 1), 10)  # only the top 10: 91..100, 101..110
    assert [len(s) for s in (book.bids, book.asks)] == [10, 10]
    # A change behind the last exact level is unknown context: not kept (the level may have had neighbours).
    book.apply([[fmt(50 * 10**8), fmt(5)]], [[fmt(200 * 10**8), fmt(5)]], 2)
    assert [len(s) for s in (book.bids, book.asks)] == [10, 10]
    # Eating into the top leaves fewer exact levels, and says so.
    book.apply([[fmt(100 * 10**8), "0.00000000"], [fmt(99 * 10**8), "0"]], [], 3)
    bids_served, asks_served, partial = served(book, 10)
    assert [b[0] for b in bids_served] == [fmt(p * 10**8) for p in range(98, 90, -1)]
    assert partial == (True, False)
    assert len(asks_served) == 10
    # Within the exact range a new level is held.
    book.apply([[fmt(955 * 10**7), "3.00000000"]], [], 4)
    bids_served = served(book, 20)[0]
    assert bids_served[3] == ["95.50000000", "3.00000000"]
    assert len(bids_served) == 9


def test_a_short_snapshot_side_is_the_whole_side() -> None:
    book = LocalBook({"lastUpdateId": 5, "bids": [["1.0", "2.0"]], "asks": []}, 1000)
    book.apply([["0.5", "1.0"]], [["2.0", "1.0"]], 6)
    bids, asks, partial = served(book, 100)
    assert bids == [["1.0", "2.0"], ["0.5", "1.0"]]
    assert asks == [["2.0", "1.0"]]
    assert partial == (False, False)


@pytest.mark.parametrize(
    "level",
    [["1.0"], ["1.0", 2], [1, "2"], "1.0,2", ["x", "1"], None],
)
def test_a_malformed_level_is_refused(level: object) -> None:
    book = LocalBook({"lastUpdateId": 1, "bids": [], "asks": []}, 100)
    with pytest.raises(BadLevel):
        book.apply([level], [], 2)


@pytest.mark.parametrize(
    "doc", [None, [], {"bids": [], "asks": []}, {"lastUpdateId": "1", "bids": [], "asks": []},
            {"lastUpdateId": 1, "bids": {}, "asks": []}],
)  # fmt: skip
def test_a_malformed_snapshot_is_refused(doc: object) -> None:
    with pytest.raises(BadLevel):
        LocalBook(doc, 100)
