"""The readers the ingest benchmark compares, and what each left in Redis.

A reader takes a feed's bookTicker frames for some symbols and (but for the ceiling) keeps each
symbol's latest value in Redis. Each runs as a process of its own, started here and measured from
outside (bench/ingest.py). ``quotes`` reads back what a reader left, as ``(u, b, B, a, A)`` per
symbol, to be compared with what the feed sent last.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.cluster import RedisCluster

from bench.peers import peer_key
from contract.keys import snapshot_key
from tests.processes import Messenger, Process, free_port

# (update id, best bid, its quantity, best ask, its quantity); the update id is None where the
# source cannot say it (the simulator's REST answer).
Quote = tuple[int | None, str, str, str, str]
# What reads a reader's values back: a client of one Redis, or of a cluster (bench/redis_modes.py).
Client = redis.Redis | RedisCluster


@dataclass(frozen=True)
class Reader:
    """One implementation: its name in the results, what it writes (``""``: nothing), and whether
    its values last (the POC's expire 1 s after their last write)."""

    name: str
    label: str
    writes: str
    lasting: bool = True

    def process(
        self, logs: Path, ws_url: str, rest_url: str, redis_url: str, symbols: list[str],
        settings: dict[str, str] | None = None,
    ) -> tuple[Process, int | None]:  # fmt: skip
        """The reader's process (not started), and its metrics port (the messenger's only).
        ``settings``: more of the messenger's environment (its Redis mode: REDIS_SENTINELS...);
        the other readers take none."""
        if settings and self.name not in ("messenger", "messenger_picows"):
            raise ValueError(f"{self.name} takes no settings")
        streams = [f"{s.lower()}@bookTicker" for s in symbols]
        python = sys.executable
        if self.name in ("messenger", "messenger_picows"):
            port = free_port()
            env = {
                "BINANCE_WS_URL": ws_url, "BINANCE_REST_URL": rest_url, "REDIS_URL": redis_url,
                "METRICS_PORT": str(port), "STATS_INTERVAL_S": "60", "LOG_LEVEL": "WARNING",
                "RECONNECT_MIN_MS": "100", "RECONNECT_MAX_MS": "1000",
                "WS_TRANSPORT": "picows" if self.name == "messenger_picows" else "websocket-client",
                **(settings or {}),
            }  # fmt: skip
            return Messenger(logs, env, *symbols), port
        if self.name in ("ceiling", "poc"):  # bench/baselines.py, reading until stopped
            extra = [redis_url] if self.name == "poc" else []
            argv = [python, "-m", "bench.baselines", self.name, ws_url, "86400", *extra, *streams]
        else:
            argv = [python, "-m", f"bench.peer_{self.name}", ws_url, redis_url, *streams]
        return Process(f"{self.name}-{free_port()}", argv, logs), None

    def keys(self, symbols: list[str]) -> list[str]:
        """Where it keeps each symbol's latest value."""
        if self.writes == "record":
            return [snapshot_key("bookticker", s) for s in symbols]
        if self.writes == "poc":
            return [f"poc:{s.lower()}@bookTicker" for s in symbols]
        return [peer_key(self.name, s) for s in symbols]

    def quotes(self, client: Client, symbols: list[str]) -> dict[str, Quote | None]:
        """What it left in Redis for each symbol (None: nothing). From a cluster, an MGET per slot,
        one after another: each value is as of its own slot's read, not all of one instant."""
        keys = self.keys(symbols)
        raw: list[Any] = []
        if symbols:
            raw = client.mget_nonatomic(keys) if isinstance(client, RedisCluster) else client.mget(keys)
        return {
            s: None if r is None else self._quote(orjson.loads(r)) for s, r in zip(symbols, raw, strict=True)
        }

    def _quote(self, doc: dict[str, Any]) -> Quote:
        return record_quote(doc) if self.writes == "record" else payload_quote(doc)


def record_quote(doc: dict[str, Any]) -> Quote:
    """The quote of a bookTicker record (contract/records.py), as stored or as served."""
    return (doc["update_id"], doc["bid_price"], doc["bid_quantity"], doc["ask_price"], doc["ask_quantity"])


def payload_quote(data: dict[str, Any]) -> Quote:
    """The quote of a bookTicker payload ``{"u":..,"s":..,"b":..,"B":..,"a":..,"A":..}``."""
    return (data.get("u"), data["b"], data["B"], data["a"], data["A"])


def same(kept: Quote | None, sent: Quote) -> bool:
    """Whether a reader kept exactly what was sent (the update id too, where the source says it)."""
    if kept is None:
        return False
    return kept[1:] == sent[1:] and (sent[0] is None or kept[0] == sent[0])


CEILING = Reader("ceiling", "websocket-client receive loop, no processing (the ceiling)", "")
POC = Reader("poc", "proof of concept: a document and an EXPIRE per frame", "poc", lasting=False)
MESSENGER = Reader("messenger", "messenger", "record")
MESSENGER_PICOWS = Reader("messenger_picows", "messenger with WS_TRANSPORT=picows", "record")
ASYNCIO = Reader("asyncio", "asyncio websockets + redis.asyncio pipeline", "peer")
PICOWS = Reader("picows", "picows + orjson + coalesced hiredis writes", "peer")
READERS = (CEILING, POC, MESSENGER, MESSENGER_PICOWS, ASYNCIO, PICOWS)
