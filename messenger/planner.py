"""What to stream: pinned symbols (of the pinned kinds), every trading symbol with ``--all``,
and whatever users ask for, of any kind: at most ``max_demand`` streams of it, the most recently
asked for first, whatever the demand set holds (the server refuses more, but several servers or
a direct write to Redis must not make the messenger carry more either).

A whole-market demand (``<kind>:*``, contract.keys.market_demand_member, for the kinds of
contract.kinds.MARKET_KINDS) is one entry among the others, counted as one against
``max_demand`` as the server counts it; kept, it brings every symbol trading now in that kind
(those already carried apart), and follows the symbol list as symbols start and stop trading.

A pure function of its inputs, so every rule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from contract.keys import ALL_SYMBOLS, parse_demand_member
from contract.kinds import MARKET_KINDS, key_kind
from messenger.binance import BOOK_TICKER, KINDS_BY_KEY, StreamKind
from messenger.routes import Route, route_for

# The kinds (key segments) whose whole market may be asked for.
MARKET_KEY_KINDS = frozenset(key_kind(k) for k in MARKET_KINDS)


@dataclass
class Plan:
    """The streams to carry, and what to tell about the rest."""

    routes: dict[str, Route] = field(default_factory=dict)
    pinned: set[str] = field(default_factory=set)  # the streams carried whatever users ask
    over_cap: int = 0  # streams asked for but left out: more than max_demand were
    invalid_demand: list[str] = field(default_factory=list)  # names no trading symbol or kind
    not_trading: list[str] = field(default_factory=list)  # pinned, but not trading now


def plan(
    pinned: Iterable[str],
    all_symbols: bool,
    demand: Mapping[str, float],
    trading: frozenset[str] | None,
    now_ms: float,
    idle_ms: float,
    pinned_kinds: Iterable[StreamKind] = (BOOK_TICKER,),
    max_demand: int | None = None,
) -> Plan:
    """The wanted streams. Until the symbol list is known, only pinned symbols are streamed."""
    kinds = list(pinned_kinds)
    out = Plan()
    symbols = list(pinned)
    if all_symbols and trading is not None:
        symbols.extend(sorted(trading))
    for symbol in symbols:
        if trading is not None and symbol not in trading:
            if symbol not in out.not_trading:
                out.not_trading.append(symbol)
            continue
        for pinned_kind in kinds:
            route = route_for(symbol, pinned_kind)
            out.routes.setdefault(route.stream, route)
    out.pinned = set(out.routes)
    # Stream name (or ``<kind>:*`` for a whole market) -> (last request, the routes it brings).
    asked: dict[str, tuple[float, list[Route]]] = {}
    for member, last_ms in demand.items():
        parsed = parse_demand_member(member)
        demanded = KINDS_BY_KEY.get(parsed[0]) if parsed else None
        if parsed is None or demanded is None or not _valid(parsed[1], demanded, trading):
            out.invalid_demand.append(member)
        elif trading is not None and now_ms - last_ms <= idle_ms:
            if parsed[1] == ALL_SYMBOLS:
                routes = [route_for(symbol, demanded) for symbol in sorted(trading)]
                name = member
            else:
                routes = [route_for(parsed[1], demanded)]
                name = routes[0].stream
            previous = asked.get(name)
            if name not in out.pinned and (previous is None or last_ms > previous[0]):
                asked[name] = (last_ms, routes)
    recent_first = sorted(asked.items(), key=lambda item: (-item[1][0], item[0]))
    kept = recent_first if max_demand is None else recent_first[:max_demand]
    out.over_cap = len(recent_first) - len(kept)
    for _, (_, routes) in kept:
        for route in routes:
            out.routes.setdefault(route.stream, route)
    return out


def _valid(symbol: str, kind: StreamKind, trading: frozenset[str] | None) -> bool:
    """Whether a demand names something we can stream: a trading symbol, or the whole market of a
    kind that may be asked for whole (one REST call seeds it all)."""
    if symbol == ALL_SYMBOLS:
        return kind.key_kind in MARKET_KEY_KINDS
    return trading is None or symbol in trading
