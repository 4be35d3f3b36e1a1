"""A record's order as Redis compares it (contract.ordering): for every kind, the encoded orders of
two updates compare as strings exactly as the updates' orders do."""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from contract import kinds
from contract.order_book import book_fields
from contract.ordering import NO_ORDER, ORDER_DIGITS, book_order, encode_order
from messenger.binance import KINDS, agg_trade_from_rest, depth_from_rest, trade_from_rest
from messenger.order_books import _order

logger = logging.getLogger(__name__)

BIG = 10**15  # beyond any id or epoch ms Binance has sent


def _cmp(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def _book_ticker(u: int) -> dict[str, Any]:
    return {"u": u, "s": "BNBBTC", "b": "0.1", "B": "1", "a": "0.2", "A": "2"}


def _trade(t: int) -> dict[str, Any]:
    return {"e": "trade", "E": 1, "s": "BNBBTC", "t": t, "p": "0.001", "q": "100", "T": 1, "m": True}


def _agg_trade(a: int) -> dict[str, Any]:
    return {"e": "aggTrade", "E": 1, "s": "BNBBTC", "a": a, "p": "0.001", "q": "100", "f": 1, "l": 2,
            "T": 1, "m": True}  # fmt: skip


def _kline(interval: str) -> Callable[[int, int, int], dict[str, Any]]:
    def make(open_ms: int, event_ms: int, trades: int) -> dict[str, Any]:
        k = {"t": open_ms, "T": open_ms + 59_999, "s": "BNBBTC", "i": interval, "f": 1, "L": 2,
             "o": "1", "c": "1", "h": "1", "l": "1", "v": "1", "n": trades, "x": False, "q": "1",
             "V": "1", "Q": "1"}  # fmt: skip
        return {"e": "kline", "E": event_ms, "s": "BNBBTC", "k": k}

    return make


def _mini_ticker(e: int) -> dict[str, Any]:
    return {"e": "24hrMiniTicker", "E": e, "s": "BNBBTC", "c": "1", "o": "1", "h": "1", "l": "1", "v": "1",
            "q": "1"}  # fmt: skip


def _ticker(e: int) -> dict[str, Any]:
    return {"e": "24hrTicker", "E": e, "s": "BNBBTC", "p": "0", "P": "0", "w": "1", "x": "1", "c": "1",
            "Q": "1", "b": "1", "B": "1", "a": "1", "A": "1", "o": "1", "h": "1", "l": "1", "v": "1",
            "q": "1", "O": 0, "C": e, "F": 0, "L": 1, "n": 2}  # fmt: skip


def _rolling_ticker(e: int) -> dict[str, Any]:
    return {"e": "1hTicker", "E": e, "s": "BNBBTC", "p": "0", "P": "0", "o": "1", "h": "1", "l": "1",
            "c": "1", "w": "1", "v": "1", "q": "1", "O": 0, "C": e, "F": 0, "L": 1, "n": 2}  # fmt: skip


def _avg_price(e: int) -> dict[str, Any]:
    return {"e": "avgPrice", "E": e, "s": "BTCUSDT", "i": "5m", "w": "1", "T": 1}


def _partial_depth(u: int) -> dict[str, Any]:
    return {"lastUpdateId": u, "bids": [["1", "1"]], "asks": [["2", "1"]]}


def _payload(kind: str) -> tuple[int, Callable[..., dict[str, Any]]]:
    """How many ints order ``kind``'s updates, and a payload with a given order."""
    if kind.startswith("kline_"):
        return 3, _kline(kind.removeprefix("kline_"))
    if kind.startswith("ticker_"):
        return 1, _rolling_ticker
    if kind.startswith("depth"):
        return 1, _partial_depth
    makers = {kinds.BOOK_TICKER: _book_ticker, kinds.TRADE: _trade, "aggTrade": _agg_trade,
              "miniTicker": _mini_ticker, "ticker": _ticker, "avgPrice": _avg_price}  # fmt: skip
    return 1, makers[kind]


def _orders(rng: random.Random, parts: int, n: int) -> list[tuple[int, ...]]:
    """``n`` random orders of ``parts`` ints, many sharing leading parts (as a stream's do)."""
    out: list[tuple[int, ...]] = []
    for _ in range(n):
        if out and rng.random() < 0.5:
            base = list(rng.choice(out))
            i = rng.randrange(parts)
            base[i] = max(0, base[i] + rng.choice((-1, 1, rng.randrange(-BIG, BIG))))
            out.append(tuple(base))
        else:
            out.append(tuple(rng.choice((0, 1, 9, 10, rng.randrange(BIG))) for _ in range(parts)))
    return out


STREAM_KINDS = sorted(name for name, kind in KINDS.items() if not kind.diff)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_every_kinds_updates_compare_in_redis_as_their_orders_do(kind: str) -> None:
    seed = time.time_ns()
    logger.info("seed %d", seed)
    rng = random.Random(seed)
    parts, make = _payload(kind)
    parse = KINDS[kind].parse
    orders = _orders(rng, parts, 40)
    encoded = []
    for order in orders:
        parsed, _fields = parse(make(*order), "BNBBTC")
        assert parsed == (order if parts > 1 else order[0])
        encoded.append(encode_order(parsed))
    assert {len(e) for e in encoded} == {parts * ORDER_DIGITS}
    for (a, ea), (b, eb) in itertools.combinations(zip(orders, encoded, strict=True), 2):
        assert _cmp(ea, eb) == _cmp(a, b), (seed, a, b)


def test_a_local_order_books_record_compares_across_messengers_by_what_it_holds() -> None:
    """Two messengers' books: a later update id wins, then a deeper tier, then more levels held."""
    level = b'["1.0","1"]'

    def fields(update_id: int, levels: int, held: tuple[int, int]) -> dict[str, Any]:
        return book_fields(
            "BNBBTC", update_id, levels, 1000, [level] * held[0], [level] * held[1], (False, False)
        )

    records = [
        fields(160, 100, (100, 100)),
        fields(160, 100, (100, 80)),
        fields(160, 500, (90, 90)),
        fields(161, 100, (10, 10)),
        fields(159, 5000, (5000, 5000)),
    ]
    orders = [_order(r) for r in records]
    assert orders[0] == book_order(160, 100, 200)
    encoded = [encode_order(o) for o in orders]
    for (a, ea), (b, eb) in itertools.combinations(zip(orders, encoded, strict=True), 2):
        assert _cmp(ea, eb) == _cmp(a, b)
    assert max(encoded) == encoded[3] and min(encoded) == encoded[4]
    assert encoded[1] < encoded[0] < encoded[2]


def test_rest_values_order_as_the_stream_does() -> None:
    """A REST seed with an order is compared with streamed values of the same kind."""
    rest_trade, _ = trade_from_rest(
        {"id": 12346, "price": "1", "qty": "1", "time": 1, "isBuyerMaker": True}, "X"
    )
    stream_trade, _ = KINDS[kinds.TRADE].parse(_trade(12345), "X")
    assert encode_order(rest_trade) > encode_order(stream_trade)
    rest_agg, _ = agg_trade_from_rest({"a": 7, "p": "1", "q": "1", "f": 1, "l": 1, "T": 1, "m": True}, "X")
    assert encode_order(rest_agg) < encode_order(KINDS["aggTrade"].parse(_agg_trade(8), "X")[0])
    rest_depth, _ = depth_from_rest(_partial_depth(161), "X", 5)
    assert encode_order(rest_depth) > encode_order(KINDS["depth5"].parse(_partial_depth(160), "X")[0])


def test_no_order_is_empty_and_anything_else_is_refused() -> None:
    assert encode_order(None) == NO_ORDER == ""
    assert encode_order(42) == "0" * 18 + "42"
    assert encode_order((1, 2)) == "0" * 19 + "1" + "0" * 19 + "2"
    for bad in (-1, 10**ORDER_DIGITS, True, 1.5, "7", (), (1, -2), [1, 2]):
        with pytest.raises(ValueError, match="not an order"):
            encode_order(bad)
