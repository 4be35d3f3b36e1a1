"""Kept trade lists: how a symbol's recent and older trades (and aggregate trades) sit in Redis.

Each series (``aggtrade``, ``trade``: the kind's key segment) of each symbol has two sorted sets,
scored by the item's id (Binance's aggregate trade id ``a``, or trade id), each member one item
exactly as Binance's REST API answers it (``{"a":26129,"p":"0.01633102",...,"M":true}`` for
``/api/v3/aggTrades``, ``{"id":28457,"price":...,"isBestMatch":true}`` for
``/api/v3/historicalTrades``), so an answer is its members joined, never re-encoded:

| key | type | what |
|---|---|---|
| ``transmute:history:<series>:<symbol>`` | sorted set, TTL | the tail: the last TAIL_KEPT items, no hole |
| ``transmute:backfilled:<series>:<symbol>`` | sorted set, TTL | older ranges fetched on request |

Both are written by the messenger only; the backfilled set holds up to TRADE_HISTORY_MAX items.

Ids of one symbol's series are consecutive integers on the exchange (every id exists), so a range
of ids ``[a, b]`` is held whole exactly when ``b - a + 1`` distinct ids of it are held: a reader
checks that, and never takes a range with a hole for a whole one. The tail is also kept without a
hole where it is written (messenger/trade_history.py: one Redis script appends only what joins
it). Ids grow with time (``T``), so ranges by time are found by bisecting ids.

Recent items are servable only while the stream's record (``transmute:aggtrade:<symbol>``) is
vouched for and the tail has caught up with it; a range that ends before the newest held item,
every id of it held, is history and is served whatever the connection's state.

Backfill requests (contract.backfill) for these series: ``aggtrade`` or ``trade`` with an id as
reach asks that ids ``[reach, reach + PAGE - 1]`` be held (one REST call of up to PAGE items);
``aggtrade_time`` with a time (epoch ms) as reach asks for the PAGE aggregate trades from that time
on and the PAGE before it (two calls), so that the first item at or after it is known.
"""

from __future__ import annotations

AGG_TRADE = "aggtrade"
TRADE = "trade"
SERIES = (AGG_TRADE, TRADE)
# Backfill series whose reach is a time (epoch ms) rather than an id.
AGG_TRADE_BY_TIME = "aggtrade_time"
BACKFILL_SERIES = (AGG_TRADE, TRADE, AGG_TRADE_BY_TIME)

TAIL_KEY_TEMPLATE = "transmute:history:{series}:{symbol}"
BACKFILLED_KEY_TEMPLATE = "transmute:backfilled:{series}:{symbol}"
# The tail holds this many items (Binance's most recent trades go up to 1,000 a request).
TAIL_KEPT = 1000
# Items per REST call (Binance's maximum limit), and so per backfill request.
PAGE = 1000
# Backfilled ranges outlive their last write by this much: they are history, never stale, but a
# symbol nobody asks about lets its memory go.
BACKFILLED_TTL_MS = 3_600_000

# Where each series' item keeps its time, for a Lua pattern over a member.
TIME_PATTERN = {AGG_TRADE: '"T":(%d+)', TRADE: '"time":(%d+)'}
# The latest id in the stream's record (contract.records), for a Lua pattern over the record.
RECORD_ID_PATTERN = {AGG_TRADE: '"agg_trade_id":(%d+)', TRADE: '"trade_id":(%d+)'}


def tail_key(series: str, symbol: str) -> str:
    """Key of a series' recent items: ``transmute:history:aggtrade:btcusdt``."""
    return TAIL_KEY_TEMPLATE.format(series=series, symbol=symbol.lower())


def backfilled_key(series: str, symbol: str) -> str:
    """Key of a series' older items fetched on request."""
    return BACKFILLED_KEY_TEMPLATE.format(series=series, symbol=symbol.lower())


def parse_tail_key(key: str) -> tuple[str, str] | None:
    """(series, SYMBOL) of a tail key, or None if it is not one."""
    prefix, _, rest = key.partition(TAIL_KEY_TEMPLATE.split("{", 1)[0])
    series, _, symbol = rest.partition(":")
    if prefix or series not in SERIES or not symbol:
        return None
    return series, symbol.upper()
