"""A simulated market per symbol: a random-walk book, trades, and what follows from them.

Trades move the 24 h statistics and the average price; candles and rolling windows are made
from the symbol's record of trades (simulator/tape.py: 35 days of history, then the live ones),
so every stream and REST answer of a symbol tells one consistent story. Prices are integers of
1e-8 and leave as 8-decimal strings, as Binance spot sends them; the update id ``u``, trade ids
and aggregate trade ids strictly increase per symbol.

A symbol whose deep book someone asks for gets a full order book (simulator/order_book.py); from
then on its steps are that book's limit orders, cancels and trades, one update id per level
changed, and its top of book, partial depth and ``u`` are that book's. Every other symbol keeps
the cheap random walk of its best levels (a flood of bookTicker costs no book).

The 24 h ticker (``@ticker``, ``@miniTicker``, ``/ticker/24hr``) and the average price count only
the live trades since the market was created (cheap for all 1,262 symbols at once); rolling
windows (``/api/v3/ticker``, ``@ticker_<w>``) count every trade, history included.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from simulator import klines, rolling
from simulator.clock import now_ms as _now_ms
from simulator.history import symbol_key
from simulator.order_book import Level, OrderBook
from simulator.stats import SCALE as _SCALE
from simulator.stats import fmt as _fmt
from simulator.stats import parse as _parse
from simulator.stats import quote_of
from simulator.tape import Tape, TradeRow
from simulator.windows import open_of


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
    """One live trade (each is also its own aggregate trade)."""

    id: int
    agg_id: int
    price: int
    qty: int
    time: int
    buyer_is_maker: bool


@dataclass(slots=True)
class SymbolMarket:
    """Everything about one symbol."""

    book: Book
    tape: Tape
    open_price: int  # 24 h ago
    last: Trade | None = None  # the latest live trade
    high: int = 0
    low: int = 0
    volume: int = 0
    quote_volume: int = 0
    count: int = 0
    avg_price: int = 0


class Market:
    """All symbols' markets; created on first use from a per-symbol seed so runs are repeatable."""

    def __init__(self, seed: int = 1, book_levels: int = 6000, book_journal: int = 200_000) -> None:
        self._seed = seed
        self._markets: dict[str, SymbolMarket] = {}
        self._rng = random.Random(seed)
        # Full order books, made only for the symbols someone asks the deep book of.
        self.books: dict[str, OrderBook] = {}
        self.book_levels = book_levels  # per side, for books made from now on
        self.book_journal = book_journal  # changes per book that GET /_sim/book?at= can undo

    def market(self, symbol: str) -> SymbolMarket:
        """The market of a symbol, created with a plausible price on first use (its past is made
        only when something asks about it)."""
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
            next_trade_id = rng.randrange(10**6, 10**7)
            # Far below the trade ids, so no aggregate id ever equals one of its trades' ids.
            next_agg_id = rng.randrange(3 * 10**5, next_trade_id // 2)
            tape = Tape(symbol_key(self._seed, symbol), _now_ms(), next_trade_id, next_agg_id, mid)
            market = SymbolMarket(book, tape, open_price=mid, high=mid, low=mid, avg_price=mid)
            self._markets[symbol] = market
        return market

    def markets(self) -> dict[str, SymbolMarket]:
        """Every market created so far."""
        return self._markets

    def book(self, symbol: str) -> Book:
        """The book of a symbol."""
        return self.market(symbol).book

    def tape(self, symbol: str) -> Tape:
        """Every trade of a symbol, history and live."""
        return self.market(symbol).tape

    def order_book(self, symbol: str) -> OrderBook:
        """The full order book of a symbol, made around its top of book on first use."""
        deep = self.books.get(symbol)
        if deep is None:
            book = self.book(symbol)
            top = (book.bid, book.bid_qty, book.ask, book.ask_qty)
            seed = f"{self._seed}:{symbol}:book"
            deep = OrderBook.around(top, book.u, self.book_levels, self.book_journal, seed)
            self.books[symbol] = deep
        return deep

    def resize(self, symbol: str, levels: int) -> Book:
        """Make a symbol's full book ``levels`` deep per side now (and keep it so)."""
        deep = self.order_book(symbol)
        book = self.book(symbol)
        before = deep.best()
        deep.resize(levels, self._rng)
        self._follow(book, deep, before)
        return book

    def step(self, symbol: str, trades: bool = True) -> tuple[Book | None, Trade | None]:
        """Move one symbol's book one random step; now and then a trade happens. A symbol with a
        full book changes it (without trades if not ``trades``), and its top of book follows:
        None for the book when its best levels did not change."""
        deep = self.books.get(symbol)
        if deep is not None:
            return self._deep_step(symbol, deep, trades)
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

    def _deep_step(self, symbol: str, deep: OrderBook, trades: bool) -> tuple[Book | None, Trade | None]:
        market = self.market(symbol)
        before = deep.best()
        taken = deep.random_change(self._rng, trades)
        trade = None if taken is None else self._record_trade(market, _now_ms(), *taken)
        return self._follow(market.book, deep, before), trade

    @staticmethod
    def _follow(book: Book, deep: OrderBook, before: tuple[int, int, int, int]) -> Book | None:
        """The top of book follows the full book's best levels and update id; None if unchanged."""
        book.u = deep.update_id
        top = deep.best()
        if top == before:
            return None
        book.bid, book.bid_qty, book.ask, book.ask_qty = top
        return book

    def _trade(self, market: SymbolMarket, at_ms: int, rng: random.Random) -> Trade:
        book = market.book
        buyer_is_maker = rng.random() < 0.5  # a seller hit the bid
        price = book.bid if buyer_is_maker else book.ask
        qty = rng.randrange(1, 10**5) * _SCALE // 1000
        return self._record_trade(market, at_ms, price, qty, buyer_is_maker)

    def _record_trade(
        self, market: SymbolMarket, at_ms: int, price: int, qty: int, buyer_is_maker: bool
    ) -> Trade:
        trade_id, agg_id, at_ms = market.tape.record(at_ms, price, qty, buyer_is_maker)
        trade = Trade(trade_id, agg_id, price, qty, at_ms, buyer_is_maker)
        market.last = trade
        market.high, market.low = max(market.high, price), min(market.low, price)
        market.volume += qty
        market.quote_volume += quote_of(price, qty)
        market.count += 1
        market.avg_price = (market.avg_price * 9 + price) // 10
        return trade

    def set(self, symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str, u: int | None = None) -> Book:
        """Put a given top of book (strings as Binance sends them); u moves forward unless given.
        A full book is changed to have it (better levels removed), one update per level: u is
        then its update id."""
        book = self.book(symbol)
        deep = self.books.get(symbol)
        if deep is not None:
            deep.set_top(_parse(bid), _parse(bid_qty), _parse(ask), _parse(ask_qty), self._rng)
            self._follow(book, deep, (0, 0, 0, 0))
            return book
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
        return orjson.dumps({"e": "aggTrade", "E": _now_ms(), "s": symbol, "a": trade.agg_id,
                             "p": _fmt(trade.price), "q": _fmt(trade.qty), "f": trade.id, "l": trade.id,
                             "T": trade.time, "m": trade.buyer_is_maker, "M": True})  # fmt: skip

    def candle(
        self, symbol: str, interval: str, offset_ms: int = 0, at_ms: int | None = None
    ) -> klines.Candle:
        """The candle of the window ``at_ms`` (default: now) falls in, with the trades so far."""
        at = _now_ms() if at_ms is None else at_ms
        return klines.candle(self.tape(symbol), interval, offset_ms, open_of(at, interval, offset_ms))

    def kline_payload(self, symbol: str, interval: str, offset_ms: int = 0) -> bytes:
        """``<symbol>@kline_<interval>``: the open candle."""
        return self.candle(symbol, interval, offset_ms).frame(symbol, interval, False, _now_ms())

    def window_ticker_payload(self, symbol: str, window_name: str) -> bytes:
        """``<symbol>@ticker_<1h|4h|1d>``: the rolling window up to now."""
        now = _now_ms()
        values = rolling.letters(self.tape(symbol), rolling.window_ms(window_name) or 0, now)
        return orjson.dumps(rolling.event(symbol, window_name, values, now))

    def mini_ticker_payload(self, symbol: str) -> bytes:
        """``<symbol>@miniTicker``."""
        return orjson.dumps({"e": "24hrMiniTicker", "E": _now_ms(), "s": symbol, **self._mini(symbol)})

    def _mini(self, symbol: str) -> dict[str, str]:
        m = self.market(symbol)
        last = m.last.price if m.last else m.book.bid
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
        first, last_id = (m.tape.live_first_id, m.tape.last_id) if m.count else (-1, -1)
        book, last_qty = m.book, m.last.qty if m.last else 0
        return {
            "p": _fmt(change), "P": f"{100 * change / m.open_price:.3f}",
            "w": _fmt(m.avg_price), "x": _fmt(m.open_price), "Q": _fmt(last_qty), "b": _fmt(book.bid),
            "B": _fmt(book.bid_qty), "a": _fmt(book.ask), "A": _fmt(book.ask_qty), **mini,
            "O": now - 86_400_000, "C": now, "F": first, "L": last_id, "n": m.count}  # fmt: skip

    def ticker_rest(self, symbol: str) -> dict[str, Any]:
        """``GET /api/v3/ticker/24hr`` (FULL) for a symbol."""
        t = self._ticker(symbol)
        return {"symbol": symbol, **{name: t[letter] for name, letter in TICKER_REST_NAMES.items()}}

    def avg_price_rest(self, symbol: str) -> dict[str, Any]:
        """``GET /api/v3/avgPrice``."""
        m = self.market(symbol)
        return {"mins": 5, "price": _fmt(m.avg_price), "closeTime": m.last.time if m.last else _now_ms()}

    def avg_price_payload(self, symbol: str) -> bytes:
        """``<symbol>@avgPrice``."""
        m = self.market(symbol)
        last_time = m.last.time if m.last else _now_ms()
        return orjson.dumps({"e": "avgPrice", "E": _now_ms(), "s": symbol, "i": "5m", "w": _fmt(m.avg_price),
                             "T": last_time})  # fmt: skip

    def depth(self, symbol: str, levels: int, back: int = 0) -> dict[str, Any]:
        """``<symbol>@depth<N>`` and ``GET /api/v3/depth``: the top levels of the full book if the
        symbol has one (as it was ``back`` updates ago, as far as its journal goes); else a
        ladder one tick apart below and above its top of book."""
        deep = self.books.get(symbol)
        if deep is not None:
            at = max(deep.oldest(), deep.update_id - back)
            bids, asks = deep.at(at) if back else deep.sides
            return book_doc(at, bids.top(levels), asks.top(levels))
        book = self.book(symbol)
        tick = max(1, book.bid // 10000)
        below = [[_fmt(max(1, book.bid - i * tick)), _fmt(book.bid_qty + i * _SCALE)] for i in range(levels)]
        above = [[_fmt(book.ask + i * tick), _fmt(book.ask_qty + i * _SCALE)] for i in range(levels)]
        return {"lastUpdateId": book.u, "bids": below, "asks": above}

    def depth_payload(self, symbol: str, levels: int) -> bytes:
        """``<symbol>@depth<N>``: the book's top levels."""
        return orjson.dumps(self.depth(symbol, levels))

    # -- REST twins ---------------------------------------------------------------------

    def recent_trades(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        """``GET /api/v3/trades``: the most recent trades, oldest first."""
        tape = self.tape(symbol)
        return [trade_entry(t) for t in tape.trades(tape.last_id - limit + 1, tape.last_id + 1)]

    def recent_agg_trades(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        """``GET /api/v3/aggTrades``: the most recent aggregate trades, oldest first."""
        tape = self.tape(symbol)
        return [agg_entry(a) for a in tape.aggs(tape.last_agg - limit + 1, tape.last_agg + 1)]


TICKER_REST_NAMES = {
    "priceChange": "p", "priceChangePercent": "P", "weightedAvgPrice": "w", "prevClosePrice": "x",
    "lastPrice": "c", "lastQty": "Q", "bidPrice": "b", "bidQty": "B", "askPrice": "a", "askQty": "A",
    "openPrice": "o", "highPrice": "h", "lowPrice": "l", "volume": "v", "quoteVolume": "q", "openTime": "O",
    "closeTime": "C", "firstId": "F", "lastId": "L", "count": "n",
}  # fmt: skip


def trade_entry(t: TradeRow) -> dict[str, Any]:
    """A ``GET /api/v3/trades`` / ``historicalTrades`` entry."""
    trade_id, at, price, qty, maker = t
    return {"id": trade_id, "price": _fmt(price), "qty": _fmt(qty), "quoteQty": _fmt(quote_of(price, qty)),
            "time": at, "isBuyerMaker": maker, "isBestMatch": True}  # fmt: skip


def agg_entry(a: tuple[int, int, int, int, int, int, bool]) -> dict[str, Any]:
    """A ``GET /api/v3/aggTrades`` entry."""
    agg_id, at, price, qty, first, last, maker = a
    return {"a": agg_id, "p": _fmt(price), "q": _fmt(qty), "f": first, "l": last, "T": at, "m": maker,
            "M": True}  # fmt: skip


def book_doc(update_id: int, bids: list[Level], asks: list[Level]) -> dict[str, Any]:
    """A book in ``GET /api/v3/depth``'s shape, prices and quantities as Binance's strings."""
    return {"lastUpdateId": update_id, "bids": [[_fmt(p), _fmt(q)] for p, q in bids],
            "asks": [[_fmt(p), _fmt(q)] for p, q in asks]}  # fmt: skip
