"""The Redis key layout both processes agree on. Keys are built here and nowhere else.

| key | type | written by | what |
|---|---|---|---|
| ``transmute:<kind>:<symbol>`` | string, TTL | messenger | the latest record (contract.records) |
| ``transmute:streams`` | hash | messenger | snapshot key -> ``pending`` / ``live``: what it streams |
| ``transmute:symbols`` | hash | messenger | symbol -> status (TRADING, BREAK, ...) from exchangeInfo |
| ``transmute:exchangeinfo`` | string | messenger | the last exchangeInfo document |
| ``transmute:demand`` | sorted set | server | ``<kind>:<SYMBOL>`` scored by its last request (epoch ms) |
| ``transmute:demand`` | channel | server | a demand was registered: look now |
"""

from __future__ import annotations

# One record per stream kind and symbol, e.g. transmute:bookticker:btcusdt.
SNAPSHOT_KEY_TEMPLATE = "transmute:{kind}:{symbol}"
STREAMS_KEY = "transmute:streams"
SYMBOLS_KEY = "transmute:symbols"
EXCHANGE_INFO_KEY = "transmute:exchangeinfo"
DEMAND_KEY = "transmute:demand"
DEMAND_CHANNEL = "transmute:demand"

# States in STREAMS_KEY: subscribed but no value yet since, or served at least once since.
PENDING = "pending"
LIVE = "live"


def snapshot_key(kind: str, symbol: str) -> str:
    """Key of the latest record of one kind for one symbol (symbol in any case)."""
    return SNAPSHOT_KEY_TEMPLATE.format(kind=kind.lower(), symbol=symbol.lower())


def demand_member(kind: str, symbol: str) -> str:
    """The member of DEMAND_KEY for a stream: ``bookticker:BTCUSDT``."""
    return f"{kind.lower()}:{symbol}"


def parse_demand_member(member: str) -> tuple[str, str] | None:
    """(kind, SYMBOL) of a DEMAND_KEY member, or None if it is not one."""
    kind, sep, symbol = member.partition(":")
    if not sep or not kind or not symbol:
        return None
    return kind, symbol
