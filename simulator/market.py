"""A simulated market per symbol: a random-walk book, trades, and what follows from them.

Trades move the 24 h statistics, the candles of every interval asked for and the average
price, so every stream and REST answer of a symbol tells one consistent story. Prices are
integers of 1e-8 and leave as 8-decimal strings, as Binance spot sends them; the update id
``u``, trade ids and aggregate trade ids strictly increase per symbol.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

_SCALE = 10**8
TRADES_KEPT = 1000
PAST_TRADES = 5  # every symbol has a little history, so REST has trades to show
INTERVAL_MS = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000, "1M": 2_592_000_000,
}  # fmt: skip


def _fmt(units: int) -> str:
    return f"{units // _SCALE}.{units % _SCALE:08d}"


def _parse(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * _SCALE + int((frac + "00000000")[:8])


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Book:
    """Best bid and ask of one symbol, as integers of 1e-8."""

    symbol: str
    u: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int

    def payload(self) -> bytes:
        """The raw ``<symbol>@bookTicker`` event, exactly as Binance spot spells it."""
        return (
            f'{{"u":{self.u},"s":"{self.symbol}","b":"{_fmt(self.bid)}","B":"{_fmt(self.bid_qty)}",'
            f'"a":"{_fmt(self.ask)}","A":"{_fmt(self.ask_qty)}"}}'
        ).encode()

    def rest(self) -> dict[str, str]:
        """The ``GET /api/v3/ticker/bookTicker`` entry (no update id: Binance sends none)."""
        return {
            "symbol": self.symbol,
            "bidPrice": _fmt(self.bid),
            "bidQty": _fmt(self.bid_qty),
            "askPrice": _fmt(self.ask),
            "askQty": _fmt(self.ask_qty),
        }

    def strings(self) -> dict[str, str | int]:
        """The current state with prices as strings (for the control API)."""
        return {"u": self.u, **self.rest()}


@dataclass(slots=True)
class Trade:
    """One trade (each is also its own aggregate trade here)."""

    id: int
    agg_id: int
    price: int
    qty: int
    time: int
    buyer_is_maker: bool


@dataclass(slots=True)
class Candle:
    """One kline window."""

    start: int
    interval_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote_volume: int = 0
    taker_buy_volume: int = 0
    taker_buy_quote: int = 0
    trades: int = 0
    first_id: int = -1
    last_id: int = -1


@dataclass(slots=True)
class SymbolMarket:
    """Everything about one symbol."""

    book: Book
    open_price: int  # 24 h ago
    trades: deque[Trade] = field(default_factory=lambda: deque(maxlen=TRADES_KEPT))
    next_trade_id: int = 1
    candles: dict[str, Candle] = field(default_factory=dict)
    high: int = 0
    low: int = 0
    volume: int = 0
    quote_volume: int = 0
    count: int = 0
    avg_price: int = 0


class Market:
    """All symbols' markets; created on first use from a per-symbol seed so runs are repeatable."""

    def __init__(self, seed: int = 1) -> None:
        self._seed = seed
        self._markets: dict[str, SymbolMarket] = {}
        self._rng = random.Random(seed)

    def market(self, symbol: str) -> SymbolMarket:
        """The market of a symbol, created with a plausible price and some history on first use."""
        market = self._markets.get(symbol)
        if market is None:
            rng = random.Random(f"{self._seed}:{symbol}")
            mid = int(10 ** rng.uniform(-3, 4.5) * _SCALE) + 100
            spread = max(1, mid // 5000)
            book = Book(
                symbol=symbol,
                u=rng.randrange(10**8, 10**9),
                bid=mid - spread,
                bid_qty=rng.randrange(1, 10**4) * _SCALE // 100,
                ask=mid + spread,
                ask_qty=rng.randrange(1, 10**4) * _SCALE // 100,
            )
            market = SymbolMarket(book, open_price=mid, high=mid, low=mid, avg_price=mid)
            market.next_trade_id = rng.randrange(10**6, 10**7)
            self._markets[symbol] = market
            for n in range(PAST_TRADES):
                self._trade(market, _now_ms() - (PAST_TRADES - n) * 60_000, rng)
        return market

    def book(self, symbol: str) -> Book:
        """The book of a symbol."""
        return self.market(symbol).book

    def step(self, symbol: str) -> tuple[Book, Trade | None]:
        """Move one symbol's book one random step; now and then a trade happens."""
        market = self.market(symbol)
        book, rng = market.book, self._rng
        book.u += rng.randint(1, 4)
        spread = max(1, book.bid // 5000)
        move = rng.random()
        if move < 0.3:
            book.bid_qty = rng.randrange(1, 10**4) * _SCALE // 100
        elif move < 0.6:
            book.ask_qty = rng.randrange(1, 10**4) * _SCALE // 100
        else:
            delta = rng.choice((-1, 1)) * spread
            book.bid = max(1, book.bid + delta)
            book.ask = max(book.bid + 1, book.ask + delta)
        trade = self._trade(market, _now_ms(), rng) if rng.random() < 0.3 else None
        return book, trade

    def _trade(self, market: SymbolMarket, at_ms: int, rng: random.Random) -> Trade:
        book = market.book
        buyer_is_maker = rng.random() < 0.5  # a seller hit the bid
        price = book.bid if buyer_is_maker else book.ask
        qty = rng.randrange(1, 10**5) * _SCALE // 1000
        trade = Trade(market.next_trade_id, market.next_trade_id, price, qty, at_ms, buyer_is_maker)
        market.next_trade_id += 1
        market.trades.append(trade)
        quote = price * qty // _SCALE
        market.high, market.low = max(market.high, price), min(market.low, price)
        market.volume += qty
        market.quote_volume += quote
        market.count += 1
        market.avg_price = (market.avg_price * 9 + price) // 10
        for interval in list(market.candles):
            candle = self._current(market, interval, at_ms)
            candle.high, candle.low, candle.close = max(candle.high, price), min(candle.low, price), price
            candle.volume += qty
            candle.quote_volume += quote
            if not buyer_is_maker:
                candle.taker_buy_volume += qty
                candle.taker_buy_quote += quote
            candle.trades += 1
            candle.first_id = trade.id if candle.first_id < 0 else candle.first_id
            candle.last_id = trade.id
        return trade

    @staticmethod
    def _current(market: SymbolMarket, interval: str, at_ms: int) -> Candle:
        """The candle of ``interval`` that ``at_ms`` falls in; a new window opens at the last close."""
        candle = market.candles.get(interval)
        if candle is None or at_ms >= candle.start + candle.interval_ms:
            size = INTERVAL_MS[interval]
            price = market.book.bid if candle is None else candle.close
            candle = market.candles[interval] = Candle(at_ms - at_ms % size, size, price, price, price, price)
        return candle

    def set(self, symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str, u: int | None = None) -> Book:
        """Put a given top of book (strings as Binance sends them); u moves forward unless given."""
        book = self.book(symbol)
        book.u = book.u + 1 if u is None else u
        book.bid, book.bid_qty = _parse(bid), _parse(bid_qty)
        book.ask, book.ask_qty = _parse(ask), _parse(ask_qty)
        return book

    # -- payloads of the other streams ------------------------------------------------

    def trade_payload(self, symbol: str, trade: Trade) -> bytes:
        """``<symbol>@trade``."""
        return orjson.dumps({"e": "trade", "E": _now_ms(), "s": symbol, "t": trade.id,
                             "p": _fmt(trade.price), "q": _fmt(trade.qty), "T": trade.time,
                             "m": trade.buyer_is_maker, "M": True})  # fmt: skip

    def agg_trade_payload(self, symbol: str, trade: Trade) -> bytes:
        """``<symbol>@aggTrade``."""
        return orjson.dumps({"e": "aggTrade", "E": _now_ms(), "s": symbol, **_agg(trade)})

    def kline_payload(self, symbol: str, interval: str) -> bytes:
        """``<symbol>@kline_<interval>``: the current candle."""
        c = self.candle(symbol, interval)
        return orjson.dumps({"e": "kline", "E": _now_ms(), "s": symbol, "k": {
            "t": c.start, "T": c.start + c.interval_ms - 1, "s": symbol, "i": interval, "f": c.first_id,
            "L": c.last_id, "o": _fmt(c.open), "c": _fmt(c.close), "h": _fmt(c.high), "l": _fmt(c.low),
            "v": _fmt(c.volume), "n": c.trades, "x": False, "q": _fmt(c.quote_volume),
            "V": _fmt(c.taker_buy_volume), "Q": _fmt(c.taker_buy_quote), "B": "0"}})  # fmt: skip

    def candle(self, symbol: str, interval: str) -> Candle:
        """The current candle of an interval (tracked from now on)."""
        return self._current(self.market(symbol), interval, _now_ms())

    def mini_ticker_payload(self, symbol: str) -> bytes:
        """``<symbol>@miniTicker``."""
        return orjson.dumps({"e": "24hrMiniTicker", "E": _now_ms(), "s": symbol, **self._mini(symbol)})

    def _mini(self, symbol: str) -> dict[str, str]:
        m = self.market(symbol)
        last = m.trades[-1].price if m.trades else m.book.bid
        return {"c": _fmt(last), "o": _fmt(m.open_price), "h": _fmt(m.high), "l": _fmt(m.low),
                "v": _fmt(m.volume), "q": _fmt(m.quote_volume)}  # fmt: skip

    def ticker_payload(self, symbol: str) -> bytes:
        """``<symbol>@ticker``."""
        return orjson.dumps({"e": "24hrTicker", "E": _now_ms(), "s": symbol, **self._ticker(symbol)})

    def _ticker(self, symbol: str) -> dict[str, Any]:
        m = self.market(symbol)
        now, mini = _now_ms(), self._mini(symbol)
        last = _parse(mini["c"])
        change = last - m.open_price
        first = m.trades[0].id if m.trades else 0
        book, last_qty = m.book, m.trades[-1].qty if m.trades else 0
        return {
            "p": ("-" if change < 0 else "") + _fmt(abs(change)), "P": f"{100 * change / m.open_price:.3f}",
            "w": _fmt(m.avg_price), "x": _fmt(m.open_price), "Q": _fmt(last_qty), "b": _fmt(book.bid),
            "B": _fmt(book.bid_qty), "a": _fmt(book.ask), "A": _fmt(book.ask_qty), **mini,
            "O": now - 86_400_000, "C": now, "F": first, "L": m.next_trade_id - 1, "n": m.count}  # fmt: skip

    def ticker_rest(self, symbol: str) -> dict[str, Any]:
        """``GET /api/v3/ticker/24hr`` (FULL) for a symbol."""
        t = self._ticker(symbol)
        return {"symbol": symbol, **{name: t[letter] for name, letter in TICKER_REST_NAMES.items()}}

    def klines_rest(self, symbol: str, interval: str) -> list[list[Any]]:
        """``GET /api/v3/klines?limit=1``: the current candle as Binance's row."""
        c = self.candle(symbol, interval)
        return [[c.start, _fmt(c.open), _fmt(c.high), _fmt(c.low), _fmt(c.close), _fmt(c.volume),
                 c.start + c.interval_ms - 1, _fmt(c.quote_volume), c.trades, _fmt(c.taker_buy_volume),
                 _fmt(c.taker_buy_quote), "0"]]  # fmt: skip

    def avg_price_rest(self, symbol: str) -> dict[str, Any]:
        """``GET /api/v3/avgPrice``."""
        m = self.market(symbol)
        return {
            "mins": 5,
            "price": _fmt(m.avg_price),
            "closeTime": m.trades[-1].time if m.trades else _now_ms(),
        }

    def avg_price_payload(self, symbol: str) -> bytes:
        """``<symbol>@avgPrice``."""
        m = self.market(symbol)
        last_time = m.trades[-1].time if m.trades else _now_ms()
        return orjson.dumps({"e": "avgPrice", "E": _now_ms(), "s": symbol, "i": "5m", "w": _fmt(m.avg_price),
                             "T": last_time})  # fmt: skip

    def depth_payload(self, symbol: str, levels: int) -> bytes:
        """``<symbol>@depth<N>``: the book's top levels, stepping one tick apart."""
        book = self.book(symbol)
        tick = max(1, book.bid // 10000)
        bids = [[_fmt(max(1, book.bid - i * tick)), _fmt(book.bid_qty + i * _SCALE)] for i in range(levels)]
        asks = [[_fmt(book.ask + i * tick), _fmt(book.ask_qty + i * _SCALE)] for i in range(levels)]
        return orjson.dumps({"lastUpdateId": book.u, "bids": bids, "asks": asks})

    # -- REST twins ---------------------------------------------------------------------

    def recent_trades(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        """``GET /api/v3/trades``: the most recent trades, oldest first."""
        trades = list(self.market(symbol).trades)[-limit:]
        return [{"id": t.id, "price": _fmt(t.price), "qty": _fmt(t.qty),
                 "quoteQty": _fmt(t.price * t.qty // _SCALE), "time": t.time,
                 "isBuyerMaker": t.buyer_is_maker, "isBestMatch": True} for t in trades]  # fmt: skip

    def recent_agg_trades(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        """``GET /api/v3/aggTrades``: the most recent aggregate trades, oldest first."""
        return [_agg(t) for t in list(self.market(symbol).trades)[-limit:]]


TICKER_REST_NAMES = {
    "priceChange": "p", "priceChangePercent": "P", "weightedAvgPrice": "w", "prevClosePrice": "x",
    "lastPrice": "c", "lastQty": "Q", "bidPrice": "b", "bidQty": "B", "askPrice": "a", "askQty": "A",
    "openPrice": "o", "highPrice": "h", "lowPrice": "l", "volume": "v", "quoteVolume": "q", "openTime": "O",
    "closeTime": "C", "firstId": "F", "lastId": "L", "count": "n",
}  # fmt: skip


def _agg(trade: Trade) -> dict[str, Any]:
    return {"a": trade.agg_id, "p": _fmt(trade.price), "q": _fmt(trade.qty), "f": trade.id, "l": trade.id,
            "T": trade.time, "m": trade.buyer_is_maker, "M": True}  # fmt: skip
