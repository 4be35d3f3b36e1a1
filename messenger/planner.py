"""What to stream: pinned symbols, every trading symbol with ``--all``, and what users ask for.

A pure function of its inputs, so every rule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from contract.keys import parse_demand_member
from messenger.binance import BOOK_TICKER, KINDS_BY_KEY
from messenger.routes import Route, route_for


@dataclass
class Plan:
    """The streams to carry, and what to tell about the rest."""

    routes: dict[str, Route] = field(default_factory=dict)
    invalid_demand: list[str] = field(default_factory=list)  # names no trading symbol or kind
    not_trading: list[str] = field(default_factory=list)  # pinned, but not trading now


def plan(
    pinned: Iterable[str],
    all_symbols: bool,
    demand: Mapping[str, float],
    trading: frozenset[str] | None,
    now_ms: float,
    idle_ms: float,
) -> Plan:
    """The wanted streams. Until the symbol list is known, only pinned symbols are streamed."""
    out = Plan()
    symbols = list(pinned)
    if all_symbols and trading is not None:
        symbols.extend(sorted(trading))
    for symbol in symbols:
        if trading is not None and symbol not in trading:
            if symbol not in out.not_trading:
                out.not_trading.append(symbol)
            continue
        route = route_for(symbol, BOOK_TICKER)
        out.routes.setdefault(route.stream, route)
    for member, last_ms in demand.items():
        parsed = parse_demand_member(member)
        kind = KINDS_BY_KEY.get(parsed[0]) if parsed else None
        if parsed is None or kind is None or (trading is not None and parsed[1] not in trading):
            out.invalid_demand.append(member)
        elif trading is not None and now_ms - last_ms <= idle_ms:
            route = route_for(parsed[1], kind)
            out.routes.setdefault(route.stream, route)
    return out
