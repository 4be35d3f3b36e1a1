"""Binance's spot stream vocabulary: stream names, frame shapes, and one parser per stream kind.

Everything that knows a Binance field letter lives here (shared/binance-protocol.md section 2).
A parser turns a payload into (order, record fields). ``order`` sorts updates of one stream
(an update id, a trade id, an event time): an update is applied only if its order is newer.
Prices and quantities stay the strings Binance sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contract import kinds
from contract.symbols import stream_symbol

Fields = dict[str, Any]
# An int or a tuple of ints, or None when unknown: comparable among one stream's updates.
Order = Any
Parser = Callable[[Any, str], tuple[Order, Fields]]


class MalformedFrame(ValueError):
    """A frame that does not have the shape its stream promises."""


@dataclass(frozen=True, slots=True)
class StreamKind:
    """One kind of market stream: Binance's name, the stream suffix, our key segment, its parser."""

    name: str  # Binance's name of the kind: "bookTicker", "depth5", "kline_1m"
    suffix: str  # what follows "<symbol>@" in the stream name: "depth5@100ms"
    parse: Parser
    history: bool = False  # keep a list of its items (trades: messenger.trade_history)
    candles: bool = False  # closed candles are kept too (messenger.kline_history)
    diff: bool = False  # changes to a book kept locally (messenger.order_books), not values to store

    @property
    def key_kind(self) -> str:
        """Our key segment: ``bookticker``."""
        return kinds.key_kind(self.name)

    def stream(self, symbol: str) -> str:
        """The stream name for a symbol: ``btcusdt@bookTicker``."""
        return f"{stream_symbol(symbol)}@{self.suffix}"


def _fields(data: Any, spec: dict[str, tuple[str, type]]) -> Fields:
    """Pick ``spec`` = {our name: (Binance letter, type)} out of a payload, checking types."""
    try:
        out = {name: data[letter] for name, (letter, _) in spec.items()}
    except (KeyError, TypeError):
        letters = ", ".join(letter for letter, _ in spec.values())
        raise MalformedFrame(f"payload lacks one of {letters}") from None
    for name, (letter, kind) in spec.items():
        value = out[name]
        # Exact types: bool is an int in Python, but Binance's ids are never booleans.
        if type(value) is not kind:
            raise MalformedFrame(f"{letter} is {type(value).__name__}, not {kind.__name__}")
    return out


def parse_book_ticker(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@bookTicker``: best bid and ask, pushed on every change.

    Sample raw payload (inside ``{"stream": "bnbusdt@bookTicker", "data": ...}`` when combined)::

        {
          "u": 400900217,       # order book update id, increasing per symbol
          "s": "BNBUSDT",       # symbol
          "b": "25.35190000",   # best bid price
          "B": "31.21000000",   # best bid quantity
          "a": "25.36520000",   # best ask price
          "A": "40.66000000"    # best ask quantity
        }

    Spot bookTicker carries no event time; the receive time is stamped by the caller.
    """
    try:
        u, s, b, bq, a, aq = data["u"], data["s"], data["b"], data["B"], data["a"], data["A"]
    except (KeyError, TypeError):
        raise MalformedFrame("bookTicker payload lacks one of u, s, b, B, a, A") from None
    if type(u) is not int or not (type(b) is type(bq) is type(a) is type(aq) is type(s) is str):
        raise MalformedFrame("bookTicker payload has a field of the wrong type")
    return u, {
        "symbol": s,
        "bid_price": b,
        "bid_quantity": bq,
        "ask_price": a,
        "ask_quantity": aq,
        "update_id": u,
    }


TRADE_FIELDS = {
    "symbol": ("s", str), "trade_id": ("t", int), "price": ("p", str), "quantity": ("q", str),
    "trade_time": ("T", int), "is_buyer_maker": ("m", bool), "event_time": ("E", int),
}  # fmt: skip


def parse_trade(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@trade``: every trade, as it happens.

    Sample raw payload::

        {
          "e": "trade",          # event type
          "E": 1672515782136,    # event time
          "s": "BNBBTC",         # symbol
          "t": 12345,            # trade id
          "p": "0.001",          # price
          "q": "100",            # quantity
          "T": 1672515782136,    # trade time
          "m": true,             # is the buyer the market maker?
          "M": true              # ignore
        }
    """
    fields = _fields(data, TRADE_FIELDS)
    return fields["trade_id"], fields


AGG_TRADE_FIELDS = {
    "symbol": ("s", str), "agg_trade_id": ("a", int), "price": ("p", str), "quantity": ("q", str),
    "first_trade_id": ("f", int), "last_trade_id": ("l", int), "trade_time": ("T", int),
    "is_buyer_maker": ("m", bool), "event_time": ("E", int),
}  # fmt: skip


def parse_agg_trade(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@aggTrade``: trades of one taker order at one price, aggregated.

    Sample raw payload::

        {
          "e": "aggTrade",       # event type
          "E": 1672515782136,    # event time
          "s": "BNBBTC",         # symbol
          "a": 12345,            # aggregate trade id
          "p": "0.001",          # price
          "q": "100",            # quantity
          "f": 100,              # first trade id
          "l": 105,              # last trade id
          "T": 1672515782136,    # trade time
          "m": true,             # is the buyer the market maker?
          "M": true              # ignore
        }
    """
    fields = _fields(data, AGG_TRADE_FIELDS)
    return fields["agg_trade_id"], fields


KLINE_FIELDS = {
    "open_time": ("t", int), "close_time": ("T", int), "interval": ("i", str),
    "first_trade_id": ("f", int), "last_trade_id": ("L", int), "open": ("o", str), "close": ("c", str),
    "high": ("h", str), "low": ("l", str), "volume": ("v", str), "trades": ("n", int), "closed": ("x", bool),
    "quote_volume": ("q", str), "taker_buy_base_volume": ("V", str), "taker_buy_quote_volume": ("Q", str),
}  # fmt: skip


def parse_kline(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@kline_<interval>``: the current candle, every 2 s (1 s for ``1s``).

    Sample raw payload::

        {
          "e": "kline", "E": 1672515782136, "s": "BNBBTC",
          "k": {
            "t": 1672515780000,  # kline start time
            "T": 1672515839999,  # kline close time
            "s": "BNBBTC", "i": "1m",
            "f": 100, "L": 200,  # first and last trade id
            "o": "0.0010", "c": "0.0020", "h": "0.0025", "l": "0.0015",
            "v": "1000",         # base asset volume
            "n": 100,            # number of trades
            "x": false,          # is this kline closed?
            "q": "1.0000",       # quote asset volume
            "V": "500",          # taker buy base asset volume
            "Q": "0.500",        # taker buy quote asset volume
            "B": "123456"        # ignore
          }
        }
    """
    if not isinstance(data, dict) or type(data.get("E")) is not int:
        raise MalformedFrame("kline payload lacks an event time E")
    fields = _fields(data.get("k"), KLINE_FIELDS)
    fields["symbol"] = data.get("s", symbol)
    fields["event_time"] = data["E"]
    return (fields["open_time"], data["E"], fields["trades"]), fields


MINI_TICKER_FIELDS = {
    "symbol": ("s", str), "event_time": ("E", int), "close": ("c", str), "open": ("o", str),
    "high": ("h", str), "low": ("l", str), "volume": ("v", str), "quote_volume": ("q", str),
}  # fmt: skip


def parse_mini_ticker(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@miniTicker``: the rolling 24 h window in brief, every second.

    Sample raw payload::

        {
          "e": "24hrMiniTicker", "E": 1672515782136, "s": "BNBBTC",
          "c": "0.0025",    # close (last) price
          "o": "0.0010",    # open price
          "h": "0.0025",    # high price
          "l": "0.0010",    # low price
          "v": "10000",     # total traded base asset volume
          "q": "18"         # total traded quote asset volume
        }
    """
    fields = _fields(data, MINI_TICKER_FIELDS)
    return fields["event_time"], fields


TICKER_FIELDS = {
    **MINI_TICKER_FIELDS,
    "price_change": ("p", str), "price_change_percent": ("P", str), "weighted_avg_price": ("w", str),
    "prev_close_price": ("x", str), "last_quantity": ("Q", str), "bid_price": ("b", str),
    "bid_quantity": ("B", str), "ask_price": ("a", str), "ask_quantity": ("A", str),
    "open_time": ("O", int), "close_time": ("C", int), "first_trade_id": ("F", int),
    "last_trade_id": ("L", int), "trades": ("n", int),
}  # fmt: skip


def parse_ticker(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@ticker``: the rolling 24 h window in full, every second.

    Sample raw payload::

        {
          "e": "24hrTicker", "E": 1672515782136, "s": "BNBBTC",
          "p": "0.0015",     # price change
          "P": "250.00",     # price change percent
          "w": "0.0018",     # weighted average price
          "x": "0.0009",     # first trade(F)-1 price (before the window)
          "c": "0.0025",     # last price
          "Q": "10",         # last quantity
          "b": "0.0024", "B": "10", "a": "0.0026", "A": "100",
          "o": "0.0010", "h": "0.0025", "l": "0.0010",
          "v": "10000",      # total traded base asset volume
          "q": "18",         # total traded quote asset volume
          "O": 0,            # statistics open time
          "C": 86400000,     # statistics close time
          "F": 0,            # first trade id
          "L": 18150,        # last trade id
          "n": 18151         # total number of trades
        }
    """
    fields = _fields(data, TICKER_FIELDS)
    return fields["event_time"], fields


ROLLING_TICKER_FIELDS = {
    "symbol": ("s", str), "event_time": ("E", int), "price_change": ("p", str),
    "price_change_percent": ("P", str), "open": ("o", str), "high": ("h", str), "low": ("l", str),
    "close": ("c", str), "weighted_avg_price": ("w", str), "volume": ("v", str), "quote_volume": ("q", str),
    "open_time": ("O", int), "close_time": ("C", int), "first_trade_id": ("F", int),
    "last_trade_id": ("L", int), "trades": ("n", int),
}  # fmt: skip


def parse_rolling_ticker(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@ticker_<1h|4h|1d>``: rolling-window statistics, every second.

    Sample raw payload (``e`` is ``1hTicker``, ``4hTicker`` or ``1dTicker``)::

        {
          "e": "1hTicker", "E": 1672515782136, "s": "BNBBTC",
          "p": "0.0015",     # price change
          "P": "250.00",     # price change percent
          "o": "0.0010", "h": "0.0025", "l": "0.0010",
          "c": "0.0025",     # last price
          "w": "0.0018",     # weighted average price
          "v": "10000",      # total traded base asset volume
          "q": "18",         # total traded quote asset volume
          "O": 0,            # statistics open time (on a minute)
          "C": 1675216573749,  # statistics close time (this update)
          "F": 0,            # first trade id
          "L": 18150,        # last trade id
          "n": 18151         # total number of trades
        }
    """
    fields = _fields(data, ROLLING_TICKER_FIELDS)
    return fields["event_time"], fields


AVG_PRICE_FIELDS = {
    "symbol": ("s", str), "event_time": ("E", int), "interval": ("i", str), "price": ("w", str),
    "last_trade_time": ("T", int),
}  # fmt: skip


def parse_avg_price(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@avgPrice``: the average price over a time window, every second.

    Sample raw payload::

        {
          "e": "avgPrice", "E": 1693907033000, "s": "BTCUSDT",
          "i": "5m",              # average price interval
          "w": "25776.86000000",  # average price
          "T": 1693907032213      # last trade time
        }
    """
    fields = _fields(data, AVG_PRICE_FIELDS)
    return fields["event_time"], fields


def parse_depth(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@depth<5|10|20>@100ms``: the top levels of the book, every 100 ms.

    Sample raw payload (no symbol in it: the stream name says which)::

        {
          "lastUpdateId": 160,             # last update id
          "bids": [["0.0024", "10"]],      # [price, quantity], best first
          "asks": [["0.0026", "100"]]
        }
    """
    try:
        last, bids, asks = data["lastUpdateId"], data["bids"], data["asks"]
    except (KeyError, TypeError):
        raise MalformedFrame("depth payload lacks lastUpdateId, bids or asks") from None
    if type(last) is not int or not _levels(bids) or not _levels(asks):
        raise MalformedFrame("depth payload has a field of the wrong type")
    return last, {"symbol": symbol, "last_update_id": last, "bids": bids, "asks": asks}


def parse_depth_update(data: Any, symbol: str) -> tuple[Order, Fields]:
    """``<symbol>@depth@100ms``: the changes to the book since the last event (a diff).

    Sample raw payload::

        {
          "e": "depthUpdate", "E": 1672515782136, "s": "BNBBTC",
          "U": 157,                        # first update id in the event
          "u": 160,                        # final update id in the event
          "b": [["0.0024", "10"]],         # bids to update: [price, quantity]; quantity 0 removes
          "a": [["0.0026", "100"]]         # asks to update
        }
    """
    try:
        first, last, bids, asks, event_time = data["U"], data["u"], data["b"], data["a"], data["E"]
    except (KeyError, TypeError):
        raise MalformedFrame("depthUpdate payload lacks U, u, b, a or E") from None
    if type(first) is not int or type(last) is not int or first > last or type(event_time) is not int:
        raise MalformedFrame("depthUpdate payload has update ids or a time of the wrong type")
    if not _levels(bids) or not _levels(asks):
        raise MalformedFrame("depthUpdate payload has levels of the wrong shape")
    fields = {"first_update_id": first, "update_id": last, "bids": bids, "asks": asks}
    return last, {**fields, "event_time": event_time}


def _levels(levels: Any) -> bool:
    return isinstance(levels, list) and all(
        isinstance(level, list) and len(level) == 2 and type(level[0]) is type(level[1]) is str
        for level in levels
    )


BOOK_TICKER = StreamKind(kinds.BOOK_TICKER, kinds.BOOK_TICKER, parse_book_ticker)
TRADE = StreamKind(kinds.TRADE, kinds.TRADE, parse_trade, history=True)
KINDS: dict[str, StreamKind] = {
    kind.name: kind
    for kind in (
        BOOK_TICKER,
        TRADE,
        StreamKind("aggTrade", "aggTrade", parse_agg_trade, history=True),
        StreamKind("miniTicker", "miniTicker", parse_mini_ticker),
        StreamKind("ticker", "ticker", parse_ticker),
        *(StreamKind(f"ticker_{w}", f"ticker_{w}", parse_rolling_ticker) for w in kinds.ROLLING_WINDOWS),
        StreamKind("avgPrice", "avgPrice", parse_avg_price),
        *(StreamKind(f"depth{n}", f"depth{n}@100ms", parse_depth) for n in kinds.DEPTH_LEVELS),
        StreamKind(kinds.DEPTH, "depth@100ms", parse_depth_update, diff=True),
        *(StreamKind(f"kline_{i}", f"kline_{i}", parse_kline, candles=True) for i in kinds.KLINE_INTERVALS),
    )
}
KINDS_BY_KEY: dict[str, StreamKind] = {kind.key_kind: kind for kind in KINDS.values()}

# A server announcing it will go down soon (raw form; combined: stream "!serverShutdown").
SERVER_SHUTDOWN_EVENT = "serverShutdown"


def book_ticker_from_rest(entry: Any) -> Fields:
    """Record fields from one ``GET /api/v3/ticker/bookTicker`` entry (it has no update id).

    Sample::

        {"symbol": "LTCBTC", "bidPrice": "4.00000000", "bidQty": "431.00000000",
         "askPrice": "4.00000200", "askQty": "9.00000000"}
    """
    try:
        fields = {
            "symbol": entry["symbol"],
            "bid_price": entry["bidPrice"],
            "bid_quantity": entry["bidQty"],
            "ask_price": entry["askPrice"],
            "ask_quantity": entry["askQty"],
            "update_id": None,
        }
    except (KeyError, TypeError):
        raise MalformedFrame("bookTicker REST entry lacks a field") from None
    if not all(type(v) is str for k, v in fields.items() if k != "update_id"):
        raise MalformedFrame("bookTicker REST entry has a field of the wrong type")
    return fields


def trade_from_rest(entry: Any, symbol: str) -> tuple[Order, Fields]:
    """Record fields from one ``GET /api/v3/trades`` entry.

    Sample::

        {"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
         "time": 1499865549590, "isBuyerMaker": true, "isBestMatch": true}
    """
    spec = {"trade_id": ("id", int), "price": ("price", str), "quantity": ("qty", str),
            "trade_time": ("time", int), "is_buyer_maker": ("isBuyerMaker", bool)}  # fmt: skip
    fields = _fields(entry, spec)
    fields["symbol"] = symbol
    fields["event_time"] = fields["trade_time"]
    return fields["trade_id"], fields


def agg_trade_from_rest(entry: Any, symbol: str) -> tuple[Order, Fields]:
    """Record fields from one ``GET /api/v3/aggTrades`` entry (the stream's letters, no e/E/s).

    Sample::

        {"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781,
         "T": 1498793709153, "m": true, "M": true}
    """
    spec = {name: spec for name, spec in AGG_TRADE_FIELDS.items() if name not in ("symbol", "event_time")}
    fields = _fields(entry, spec)
    fields["symbol"] = symbol
    fields["event_time"] = fields["trade_time"]
    return fields["agg_trade_id"], fields


def kline_from_rest(row: Any, symbol: str, interval: str) -> Fields:
    """Record fields from the last ``GET /api/v3/klines`` row (no trade ids, no event time).

    Sample row::

        [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
         1499644799999, "2434.19055334", 308, "1756.87402397", "28.46694368", "0"]
    """
    try:
        t, o, h, low, c, v, close_time, q, n, taker_base, taker_quote = row[:11]
    except (TypeError, ValueError):
        raise MalformedFrame("klines row is not a list of at least 11 fields") from None
    fields = {"open_time": t, "close_time": close_time, "interval": interval, "first_trade_id": None,
              "last_trade_id": None, "open": o, "close": c, "high": h, "low": low, "volume": v, "trades": n,
              "closed": False, "quote_volume": q, "taker_buy_base_volume": taker_base,
              "taker_buy_quote_volume": taker_quote, "symbol": symbol, "event_time": None}  # fmt: skip
    if not all(type(x) is str for x in (o, h, low, c, v, q, taker_base, taker_quote)) or type(t) is not int:
        raise MalformedFrame("klines row has a field of the wrong type")
    return fields


# GET /api/v3/ticker/24hr names -> ours (the full form also fills a miniTicker record).
TICKER_REST = {
    "symbol": "symbol", "priceChange": "price_change", "priceChangePercent": "price_change_percent",
    "weightedAvgPrice": "weighted_avg_price", "prevClosePrice": "prev_close_price", "lastPrice": "close",
    "lastQty": "last_quantity", "bidPrice": "bid_price", "bidQty": "bid_quantity", "askPrice": "ask_price",
    "askQty": "ask_quantity", "openPrice": "open", "highPrice": "high", "lowPrice": "low", "volume": "volume",
    "quoteVolume": "quote_volume", "openTime": "open_time", "closeTime": "close_time",
    "firstId": "first_trade_id", "lastId": "last_trade_id", "count": "trades",
}  # fmt: skip
MINI_FROM_TICKER = ("symbol", "close", "open", "high", "low", "volume", "quote_volume")


def ticker_from_rest(entry: Any, mini: bool) -> Fields:
    """Record fields (ticker, or with ``mini`` miniTicker) from one ``GET /api/v3/ticker/24hr`` entry."""
    try:
        fields = {ours: entry[theirs] for theirs, ours in TICKER_REST.items()}
    except (KeyError, TypeError):
        raise MalformedFrame("24hr REST entry lacks a field") from None
    fields["event_time"] = fields["close_time"]
    if mini:
        fields = {k: fields[k] for k in (*MINI_FROM_TICKER, "event_time")}
    return fields


# GET /api/v3/ticker (rolling window, FULL) names -> ours.
ROLLING_TICKER_REST = {
    "symbol": "symbol", "priceChange": "price_change", "priceChangePercent": "price_change_percent",
    "weightedAvgPrice": "weighted_avg_price", "openPrice": "open", "highPrice": "high", "lowPrice": "low",
    "lastPrice": "close", "volume": "volume", "quoteVolume": "quote_volume", "openTime": "open_time",
    "closeTime": "close_time", "firstId": "first_trade_id", "lastId": "last_trade_id", "count": "trades",
}  # fmt: skip


def rolling_ticker_from_rest(entry: Any) -> Fields:
    """Record fields of a ``ticker_<window>`` from one ``GET /api/v3/ticker?windowSize=`` entry (FULL).

    Sample::

        {"symbol": "BNBBTC", "priceChange": "-8.00000000", "priceChangePercent": "-88.889",
         "weightedAvgPrice": "2.60427807", "openPrice": "9.00000000", "highPrice": "9.00000000",
         "lowPrice": "1.00000000", "lastPrice": "1.00000000", "volume": "187.00000000",
         "quoteVolume": "487.00000000", "openTime": 1641859200000, "closeTime": 1642031999999,
         "firstId": 0, "lastId": 60, "count": 61}
    """
    try:
        fields = {ours: entry[theirs] for theirs, ours in ROLLING_TICKER_REST.items()}
    except (KeyError, TypeError):
        raise MalformedFrame("rolling ticker REST entry lacks a field") from None
    fields["event_time"] = fields["close_time"]
    return fields


def avg_price_from_rest(doc: Any, symbol: str) -> Fields:
    """Record fields from ``GET /api/v3/avgPrice``: ``{"mins": 5, "price": "9.35", "closeTime": ...}``."""
    try:
        mins, price, close_time = doc["mins"], doc["price"], doc["closeTime"]
    except (KeyError, TypeError):
        raise MalformedFrame("avgPrice REST answer lacks a field") from None
    if type(price) is not str:
        raise MalformedFrame("avgPrice REST price is not a string")
    return {
        "symbol": symbol,
        "event_time": None,
        "interval": f"{mins}m",
        "price": price,
        "last_trade_time": close_time,
    }


def depth_from_rest(doc: Any, symbol: str, levels: int) -> tuple[Order, Fields]:
    """Record fields from ``GET /api/v3/depth``, cut to a partial book's levels."""
    order, fields = parse_depth(doc, symbol)
    fields["bids"], fields["asks"] = fields["bids"][:levels], fields["asks"][:levels]
    return order, fields


def response_error(msg: dict[str, Any]) -> str | None:
    """The error text of a reply to our request, in either form Binance uses, else None.

    Documented: ``{"code": 2, "msg": "...", "id": 1}``; seen on the wire:
    ``{"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2}``.
    """
    err = msg.get("error")
    if isinstance(err, dict):
        return f"{err.get('code')}: {err.get('msg')}"
    if "code" in msg and "msg" in msg:
        return f"{msg['code']}: {msg['msg']}"
    return None
