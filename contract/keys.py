"""The Redis key layout both processes agree on. Keys are built here and nowhere else."""

from __future__ import annotations

# One record per stream kind and symbol, e.g. transmute:bookticker:btcusdt.
SNAPSHOT_KEY_TEMPLATE = "transmute:{kind}:{symbol}"


def snapshot_key(kind: str, symbol: str) -> str:
    """Key of the latest record of one kind for one symbol (symbol in any case)."""
    return SNAPSHOT_KEY_TEMPLATE.format(kind=kind.lower(), symbol=symbol.lower())
