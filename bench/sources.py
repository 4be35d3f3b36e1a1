"""Where the benchmarks' frames come from: the cheap feed (bench/feed.py) or the simulator. Either
says how many frames it sent, what it sent last per symbol, and its process id (its CPU is reported
beside every figure: a source that saturates its core measures itself); for the freshness benchmark,
either sends a new BTCUSDT top of book on demand (a probe) and says when."""

from __future__ import annotations

import sys
from http.client import HTTPConnection, RemoteDisconnected
from pathlib import Path
from typing import Any, Protocol

import orjson

from bench.readers import Quote, payload_quote
from bench.stack import frames_sent
from tests.processes import Process, Simulator, free_port, http, wait_until


class Source(Protocol):
    """A flood of bookTicker frames for whoever subscribes."""

    name: str

    @property
    def ws_url(self) -> str: ...

    @property
    def pid(self) -> int: ...

    def frames_sent(self) -> int: ...

    def streams(self) -> int: ...

    def flood(self, on: bool) -> None: ...

    def last(self, symbols: list[str]) -> dict[str, Quote]: ...


class FeedProcess(Process):
    """``python -m bench.feed`` on a free port, with its control calls."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "bench.feed", "--port", str(self.port), *args]
        super().__init__(f"feed-{self.port}", argv, log_dir)

    @property
    def ws_url(self) -> str:
        """BINANCE_WS_URL for a reader."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it answers."""
        super().start()
        wait_until(lambda: self._get("state") is not None, 15, 0.05, what="the feed")

    def _get(self, path: str) -> Any:
        try:
            status, _, doc = http("GET", f"http://127.0.0.1:{self.port}/_feed/{path}")
        except OSError:
            return None
        return doc if status == 200 else None

    def state(self) -> dict[str, Any]:
        """``flood``, ``frames_sent``, ``streams``, ``connections``."""
        doc: dict[str, Any] = self._get("state")
        return doc

    def last(self) -> dict[str, dict[str, Any]]:
        """Each symbol's last payload sent."""
        doc: dict[str, dict[str, Any]] = self._get("last")
        return doc

    def flood(self, on: bool) -> None:
        """Send frames, or stop."""
        status = http("POST", f"http://127.0.0.1:{self.port}/_feed/flood?on={int(on)}")[0]
        assert status == 200

    def probe(self, symbol: str) -> dict[str, Any]:
        """Send one new frame of ``symbol`` now: its ``u``, ``sent_at`` (epoch s) and ``connections``."""
        status, _, doc = http("POST", f"http://127.0.0.1:{self.port}/_feed/probe?symbol={symbol}")
        assert status == 200, doc
        answer: dict[str, Any] = doc
        return answer


class FeedSource:
    """The cheap feed."""

    name = "feed"

    def __init__(self, feed: FeedProcess) -> None:
        self.feed = feed

    @property
    def ws_url(self) -> str:
        return self.feed.ws_url

    @property
    def pid(self) -> int:
        assert self.feed.proc is not None
        return self.feed.proc.pid

    def frames_sent(self) -> int:
        return int(self.feed.state()["frames_sent"])

    def streams(self) -> int:
        return int(self.feed.state()["streams"])

    def flood(self, on: bool) -> None:
        self.feed.flood(on)

    def last(self, symbols: list[str]) -> dict[str, Quote]:
        sent = self.feed.last()
        return {s: payload_quote(sent[s]) for s in symbols if s in sent}

    def frames_skipped(self) -> int:
        """Paced frames due while a reader was behind (its buffers full), on the open connections."""
        return sum(int(c["frames_skipped"]) for c in self.feed.state()["connections"])

    def probe(self, n: int) -> tuple[int, float]:
        """Send BTCUSDT's next frame now: (its update id, when it was written, epoch s)."""
        sent = self.feed.probe("BTCUSDT")
        return int(sent["u"]), float(sent["sent_at"])

    def close(self) -> None:
        """Nothing kept open."""


class SimulatorSource:
    """The simulator started with ``--flood`` (what the ingest benchmark used before the feed), or
    with ``--rate`` (the freshness benchmark's)."""

    name = "simulator"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.conn: HTTPConnection | None = None  # the probe's, kept alive

    @property
    def ws_url(self) -> str:
        return self.sim.ws_url

    @property
    def pid(self) -> int:
        assert self.sim.proc is not None
        return self.sim.proc.pid

    def frames_sent(self) -> int:
        return frames_sent(self.sim)[0]

    def streams(self) -> int:
        return sum(len(s["streams"]) for s in self.sim.sessions())

    def flood(self, on: bool) -> None:
        self.sim.market(flood=on, rate=0)

    def last(self, symbols: list[str]) -> dict[str, Quote]:
        """The books now (the flood stopped), over REST: no update id there."""
        _, _, books = http("GET", f"{self.sim.rest_url}/api/v3/ticker/bookTicker")
        by_symbol = {b["symbol"]: b for b in books}
        return {
            s: (None, b["bidPrice"], b["bidQty"], b["askPrice"], b["askQty"])
            for s in symbols if (b := by_symbol.get(s)) is not None
        }  # fmt: skip

    def probe(self, n: int) -> tuple[int, float]:
        """Set a new BTCUSDT top of book and send it now: (its update id, when it was queued on the
        connections, epoch s: each writes it after what it has queued, see ``written``)."""
        doc = {
            "symbol": "BTCUSDT",
            "bid_price": f"{40000 + n % 1000}.01000000",
            "bid_quantity": "1.00000000",
            "ask_price": f"{40000 + n % 1000}.02000000",
            "ask_quantity": "1.00000000",
        }
        body, headers = orjson.dumps(doc), {"Content-Type": "application/json"}
        if self.conn is None:
            self.conn = HTTPConnection("127.0.0.1", self.sim.port, timeout=5)
        try:
            self.conn.request("POST", "/_sim/book", body, headers)
            response = self.conn.getresponse()
        except (RemoteDisconnected, ConnectionError):
            self.conn.close()  # reconnected by the next request
            self.conn.request("POST", "/_sim/book", body, headers)
            response = self.conn.getresponse()
        sent = orjson.loads(response.read())
        return int(sent["u"]), sent["published_at_ms"] / 1000

    def written(self, u: int) -> tuple[float, float] | None:
        """When the probe of update ``u`` was queued and first written to a connection (epoch s),
        as the simulator timed them (simulator.probes); None if it was never written."""
        status, _, doc = http("GET", f"{self.sim.rest_url}/_sim/book/BTCUSDT/written?u={u}")
        if status != 200 or doc["written_at_ms"] is None:
            return None
        return doc["queued_at_ms"] / 1000, doc["written_at_ms"] / 1000

    def close(self) -> None:
        """Close the probe's connection."""
        if self.conn is not None:
            self.conn.close()
