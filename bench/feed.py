"""A cheap bookTicker feed for capacity runs: Binance's frames, pre-encoded, as fast as a reader reads
or at a steady rate.

    python -m bench.feed [--host 127.0.0.1] [--port 9443] [--ping-interval-s 20] [--no-flood] [--rate N]

The simulator spends about a core making and sending 55-115k frames a second, so a fast reader
measures the simulator. This feed sends the same frames (bench/tapes.py: the combined-stream
format of ``<symbol>@bookTicker``, each symbol's ``u`` going up by one a frame) for a fraction of
a microsecond each: frames are pieces made in advance, written a few hundred at a time, as fast as
each connection's reader takes them (asyncio's write flow control), rotating over its symbols.

With ``--rate N`` the feed is paced instead: N frames a second in all, over every subscribed
bookTicker symbol of every connection (each connection's share in proportion to its symbols, each
rotating over its own as the flood does), sent every TICK_S so the load is steady (a latency
benchmark's load, as an exchange on another machine would send it). A connection whose reader
falls behind (its buffers full) skips the frames due meanwhile: ``frames_sent`` is what was sent.

As Binance: ``/stream?streams=a/b`` (combined), ``/ws/<stream>[/...]`` and ``/ws`` (raw);
SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY and GET_PROPERTY ``combined`` answered;
a ping every ``--ping-interval-s``, client pings answered, the close handshake. Only bookTicker
streams carry frames; other streams are accepted and stay silent. No limit is enforced.

Control, plain HTTP on the same port (what a benchmark needs to judge a reader):

- ``GET /_feed/state``: ``flood``, ``rate``, ``frames_sent`` (all connections, ever), ``streams``
  (subscribed on open connections), ``connections`` (each with its ``frames_skipped``: paced frames
  due while its reader was behind);
- ``GET /_feed/last``: each symbol's last payload sent, ``{"BTCUSDT": {"u": ..., "s": ...}}``;
- ``POST /_feed/flood?on=1`` or ``?on=0``: send frames, or stop (pings and replies go on);
- ``POST /_feed/probe?symbol=BTCUSDT``: one new frame of that symbol now, on every connection
  carrying it (flood on or off), answered with its ``u``, ``sent_at`` (epoch seconds, taken just
  before the first write: where a latency measurement starts) and ``connections``; 404 if no
  connection carries it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any

from bench.feed_connection import Connection
from bench.tapes import Tape

logger = logging.getLogger("bench.feed")

TICK_S = 0.001  # a paced feed's frames go out this often
MAX_CATCH_UP_S = 0.25  # after a stall (a big subscribe, a busy machine), at most this much is sent at once


class Feed:
    """The tapes, the flood switch, the pace and the open connections of one feed process."""

    def __init__(self, ping_interval_s: float, flood: bool = True, rate: float | None = None) -> None:
        self.ping_interval_s = ping_interval_s
        self.flood = flood
        self.rate = rate  # frames/s over all connections; None: as fast as each reader reads
        self.tapes: dict[str, Tape] = {}
        self.connections: dict[int, Connection] = {}
        self.closed_frames = 0  # frames sent over connections now closed
        self._next_id = 1
        self._ticked_at = 0.0

    def tape(self, stream: str) -> Tape | None:
        """The tape of a bookTicker stream (made the first time), None for any other stream."""
        symbol, _, kind = stream.partition("@")
        if kind != "bookTicker" or not symbol:
            return None
        tape = self.tapes.get(symbol.upper())
        if tape is None:
            tape = self.tapes[symbol.upper()] = Tape(symbol)
        return tape

    def new_id(self) -> int:
        """A fresh connection id."""
        self._next_id += 1
        return self._next_id - 1

    def set_flood(self, on: bool) -> None:
        """Start or stop sending frames on every connection."""
        self.flood = on
        if on:
            for connection in self.connections.values():
                connection.pump()

    def pace(self) -> None:
        """Send the paced feed's frames every TICK_S, from now on (``--rate``)."""
        self._ticked_at = time.monotonic()
        asyncio.get_running_loop().call_at(self._ticked_at + TICK_S, self._tick)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        elapsed, self._ticked_at = min(now - self._ticked_at, MAX_CATCH_UP_S), now
        loop.call_at(now + TICK_S, self._tick)
        if not self.flood or not self.rate:
            return
        carrying = [c for c in self.connections.values() if c.entries]
        symbols = sum(len(c.entries) for c in carrying)
        for connection in carrying:
            connection.paced(self.rate * elapsed * len(connection.entries) / symbols)

    def probe(self, symbol: str) -> dict[str, Any] | None:
        """One new frame of ``symbol`` on every connection carrying it, now: its ``u`` and when it
        was written; None if no connection carries it."""
        tape = self.tapes.get(symbol.upper())
        carrying = [] if tape is None else [c for c in self.connections.values() if c.carries(tape.symbol)]
        if tape is None or not carrying:
            return None
        tape.u += 1
        sent_at = time.time()
        for connection in carrying:
            connection.write_update(tape.symbol, tape.u)
        return {"symbol": tape.symbol, "u": tape.u, "sent_at": sent_at, "connections": len(carrying)}

    def state(self) -> dict[str, Any]:
        """What ``GET /_feed/state`` answers."""
        open_ = list(self.connections.values())
        return {
            "flood": self.flood,
            "rate": self.rate,
            "frames_sent": self.closed_frames + sum(c.frames_sent for c in open_),
            "streams": sum(len(c.streams) for c in open_),
            "connections": [c.describe() for c in open_],
        }

    def last(self) -> dict[str, Any]:
        """What ``GET /_feed/last`` answers."""
        return {symbol: data for symbol, tape in self.tapes.items() if (data := tape.data()) is not None}


async def serve(host: str, port: int, feed: Feed) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(feed), host, port, reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if feed.rate:
        feed.pace()
    pace = f", {feed.rate:g} frames/s" if feed.rate else ", as fast as read"
    logger.info("feed: listening on ws://%s:%d%s", host, port, pace)
    async with server:
        await stop.wait()
    for connection in list(feed.connections.values()):
        if connection.transport is not None:
            connection.transport.abort()


def main(argv: list[str] | None = None) -> int:
    """Run a feed."""
    parser = argparse.ArgumentParser(prog="python -m bench.feed", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--ping-interval-s", type=float, default=20.0)
    parser.add_argument("--no-flood", action="store_true", help="start with the flood off")
    parser.add_argument(
        "--rate", type=float, default=None, metavar="N",
        help="N frames/s in all, over every subscribed symbol, sent every TICK_S (default: as fast as read)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be above 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    feed = Feed(args.ping_interval_s, flood=not args.no_flood, rate=args.rate)
    asyncio.run(serve(args.host, args.port, feed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
