"""What the ingest benchmark's peers (bench/peer_*.py) share: where they write, how they split
streams over connections, how they are stopped.

Each peer is a process of its own, ``python -m bench.peer_<name> <ws_url> <redis_url> <stream>...``,
that keeps every symbol's latest bookTicker payload (the JSON of ``data``) under PEER_KEY_TEMPLATE
until SIGTERM. The benchmark measures it from outside: CPU from /proc, frames from the feed, and
the values it left in Redis against what the feed sent last.
"""

from __future__ import annotations

import asyncio
import signal

PEER_KEY_TEMPLATE = "bench:{peer}:bookticker:{symbol}"
PEER_TTL_MS = 600_000
STREAMS_PER_CONNECTION = 1024  # Binance's limit
FLUSH_EVERY_S = 0.005  # a peer writes what changed this often


def peer_key(peer: str, symbol: str) -> str:
    """Where ``peer`` keeps ``symbol``'s latest payload."""
    return PEER_KEY_TEMPLATE.format(peer=peer, symbol=symbol.upper())


def groups(streams: list[str]) -> list[list[str]]:
    """Streams split over as few connections as Binance allows."""
    return [streams[i : i + STREAMS_PER_CONNECTION] for i in range(0, len(streams), STREAMS_PER_CONNECTION)]


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (call inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
