"""The simulated exchange: symbols, books, open connections, and the market data that flows.

Every update is made once per symbol and fanned out to every connection subscribed to its
stream, so overlapping connections see the same events with the same update ids, as on Binance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from simulator.catalog import Catalog
from simulator.config import SimConfig
from simulator.depth_feed import DiffFeeds, deliver, is_diff
from simulator.limits import IpLimits
from simulator.market import Market
from simulator.probes import Probes
from simulator.record import Recorder
from simulator.streams import parse_stream
from simulator.timed import TICK_S as PERIODIC_TICK_S
from simulator.timed import TimedStreams

if TYPE_CHECKING:
    from simulator.session import Session

logger = logging.getLogger(__name__)

TICK_S = 0.005
LOCAL = "127.0.0.1"  # the client IP when a caller does not say
FLOOD_BATCH = 512


class Exchange:
    """State shared by the WebSocket, REST and control handlers of one simulator."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.catalog = Catalog(config.exchange_info, config.extra_symbols)
        self.market = Market(config.seed, config.book_levels, config.book_journal)
        self.sessions: dict[int, Session] = {}
        self.closed_sessions: deque[dict[str, Any]] = deque(maxlen=1000)
        self.subscribers: dict[str, set[Session]] = {}
        self.quiet: set[str] = set()
        self.limits = IpLimits(config)  # Binance's limits per client IP, and their violations
        self.rejected_connections = 0
        self.rest_requests: list[dict[str, Any]] = []  # the last 500: path (with query), at, weight
        self.rest_totals: dict[str, dict[str, int]] = {}  # path -> calls and weight since the start
        self.rest_429: dict[str, float] = {"remaining": 0, "retry_after_s": 0}
        # The connect_429 fault: the next handshakes refused with this status and Retry-After.
        self.connect_refusal: dict[str, float] = {"remaining": 0, "status": 429, "retry_after_s": 0}
        self.refused_handshakes: list[float] = []  # when each was refused (epoch s)
        self.rest_rejected = 0  # REST requests answered 429: a client over Binance's weight limit
        self.loop_lag_max_s = 0.0
        self.control_messages = 0
        self._next_session_id = 1
        self._rng = random.Random(config.seed)
        self._active: list[str] = []
        self.timed = TimedStreams(self.market)
        self.diff_feeds = DiffFeeds(self.market)
        # Depth faults done (simulator/control.py): drop_diff, swap_diff, depth_delay.
        self.depth_faults: dict[str, int] = {"drop_diff": 0, "swap_diff": 0, "depth_delay": 0}
        # The depth_delay fault: REST depth answers held back (until: monotonic s; 0: no end).
        self.depth_delay: dict[str, float] = {"remaining": 0, "until": 0.0, "delay_ms": 0, "stale_updates": 0}
        self._active_version = 0
        self._deep_active: tuple[int, int, list[str]] = (-1, -1, [])
        self._active_dirty = True
        self._flood_next = 0  # where in the active symbols the next flood batch starts
        self._drained = asyncio.Event()
        # What was published, for a test's oracle (--record); None: not kept.
        self.recorder = Recorder() if config.record else None
        self.probes = Probes()  # when each POST /_sim/book's frame was queued and first written

    # -- connections ------------------------------------------------------------------

    def admit_connection(self, ip: str = LOCAL) -> bool:
        """Count a connection attempt; False once the per-IP budget of the window is spent."""
        if self.limits.attempt(ip):
            return True
        self.rejected_connections += 1
        return False

    def refuse_handshake(self, ip: str = LOCAL) -> tuple[int, str] | None:
        """(HTTP status, Retry-After) if the connect_429 fault refuses this handshake."""
        fault = self.connect_refusal
        if fault["remaining"] <= 0:
            return None
        fault["remaining"] -= 1
        self.refused_handshakes.append(time.time())
        retry_after = int(fault["retry_after_s"] or 60)
        self.limits.told_to_wait(ip, retry_after)
        return int(fault["status"]), str(retry_after)

    def new_session_id(self) -> int:
        """A fresh connection id."""
        sid = self._next_session_id
        self._next_session_id += 1
        return sid

    def register(self, session: Session) -> None:
        """A connection has opened."""
        self.sessions[session.id] = session

    def unregister(self, session: Session) -> None:
        """A connection has closed: forget its subscriptions, keep its record for tests."""
        self.sessions.pop(session.id, None)
        for stream in list(session.streams):
            self.unsubscribe(session, stream)
        self.closed_sessions.append(session.describe())
        self.notify_drained()  # a flood may be waiting for this one

    def subscribe(self, session: Session, stream: str) -> None:
        """Start delivering a stream to a connection."""
        session.streams[stream] = None
        self.subscribers.setdefault(stream, set()).add(session)
        self.timed.add(stream)
        parsed = parse_stream(stream)
        if parsed is not None and is_diff(parsed[1]) and parsed[0] in self.catalog:
            self.diff_feeds.add(stream, *parsed)
        self._active_dirty = True

    def unsubscribe(self, session: Session, stream: str) -> None:
        """Stop delivering a stream to a connection."""
        session.streams.pop(stream, None)
        subs = self.subscribers.get(stream)
        if subs is not None:
            subs.discard(session)
            if not subs:
                del self.subscribers[stream]
                self.timed.remove(stream)
                self.diff_feeds.remove(stream)
                if self.recorder is not None:
                    self.recorder.left(stream)
        self._active_dirty = True

    def iter_sessions(self, session_id: int | None) -> Iterator[Session]:
        """One connection by id, or all open ones."""
        if session_id is None:
            yield from list(self.sessions.values())
        elif session_id in self.sessions:
            yield self.sessions[session_id]

    # -- market data ------------------------------------------------------------------

    def publish_book(self, symbol: str, payload: bytes, on_write: Callable[[], None] | None = None) -> int:
        """Send a bookTicker event to every subscriber; returns how many got it. ``on_write`` is
        called just before each connection writes it (simulator.probes)."""
        stream = f"{symbol.lower()}@bookTicker"
        return self.publish(stream, payload, on_write)

    def publish(self, stream: str, payload: bytes, on_write: Callable[[], None] | None = None) -> int:
        """Send a raw event on a stream to every connection subscribed to it."""
        subs = self.subscribers.get(stream)
        if not subs:
            return 0
        if self.recorder is not None:
            self.recorder.sent(stream, payload)
        combined: bytes | None = None
        for session in subs:
            if session.combined:
                if combined is None:
                    combined = b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"
                frame = combined
            else:
                frame = payload
            session.push(frame)
            if on_write is not None and not session.stalled:
                session.watch(frame, on_write)
        return len(subs)

    def publish_diff(self, stream: str, symbol: str, payload: bytes) -> None:
        """Send a diff depth event to its stream's subscribers, through their armed faults (not
        recorded: the full book's oracle is its journal, GET /_sim/book?at=)."""
        combined = b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"
        for session in self.subscribers.get(stream, ()):
            frame = combined if session.combined else payload
            if not session.diff_faults:
                session.push(frame)
                continue
            frames, done = deliver(session.diff_faults, symbol, frame)
            for each in frames:
                session.push(each)
            if done is not None:
                self.depth_faults[done] += 1

    def _active_symbols(self) -> list[str]:
        """Symbols someone subscribes to, that are listed and not quiet: the market moves them."""
        if self._active_dirty:
            symbols = {stream.partition("@")[0].upper() for stream in self.subscribers}
            self._active = sorted(s for s in symbols if s in self.catalog and s not in self.quiet)
            self._active_version += 1
            self._active_dirty = False
        return self._active

    def set_quiet(self, symbols: list[str]) -> None:
        """These symbols stop changing (a quiet market), until set otherwise."""
        self.quiet = set(symbols)
        self._active_dirty = True

    def _deep_active_symbols(self) -> list[str]:
        """The active symbols that have a full order book."""
        active, books = self._active_symbols(), self.market.books
        key = (self._active_version, len(books))
        if self._deep_active[:2] != key:
            self._deep_active = (*key, [s for s in active if s in books])
        return self._deep_active[2]

    def step_and_publish(self, symbol: str, trades: bool = True) -> None:
        """One random update of one symbol (and maybe a trade), sent to whoever subscribes."""
        book, trade = self.market.step(symbol, trades)
        lower = symbol.lower()
        if book is not None:
            self.publish(f"{lower}@bookTicker", book.payload())
        if trade is not None:
            if f"{lower}@trade" in self.subscribers:
                self.publish(f"{lower}@trade", self.market.trade_payload(symbol, trade))
            if f"{lower}@aggTrade" in self.subscribers:
                self.publish(f"{lower}@aggTrade", self.market.agg_trade_payload(symbol, trade))

    async def run_market(self) -> None:
        """Drive the random walk: ``rate`` updates per active symbol per second, or a flood."""
        owed = owed_book = 0.0
        last = time.monotonic()
        while True:
            if self.config.flood:
                await self._flood_once()
                last = time.monotonic()
                continue
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            active, deep = self._active_symbols(), self._deep_active_symbols()
            owed += self.config.rate * len(active) * (now - last)
            owed_book += self.config.book_rate * len(deep) * (now - last)
            last = now
            if not active:
                owed = 0.0
            if not deep:
                owed_book = 0.0
            due, due_book = int(owed), int(owed_book)
            owed -= due
            owed_book -= due_book
            choice = self._rng.choice
            for _ in range(due):
                self.step_and_publish(choice(active))
            for _ in range(due_book):  # limit orders and cancels only
                self.step_and_publish(choice(deep), trades=False)

    async def run_periodic(self) -> None:
        """Push the streams Binance sends on a timer (simulator/timed.py)."""
        tick = 0
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(PERIODIC_TICK_S)
            # How late the loop woke: how long everything the exchange does was held up.
            self.loop_lag_max_s = max(self.loop_lag_max_s, time.monotonic() - asleep - PERIODIC_TICK_S)
            tick += 1
            for stream, payload in self.timed.due(tick, self.catalog):
                self.publish(stream, payload)
            for stream, symbol, event in self.diff_feeds.due(tick):
                self.publish_diff(stream, symbol, event)

    async def _flood_once(self) -> None:
        active = self._active_symbols()
        if not active:
            await asyncio.sleep(TICK_S)
            return
        # Each batch goes on where the last one stopped, so every subscribed symbol moves, however
        # many there are (not only the first FLOOD_BATCH).
        n, start = len(active), self._flood_next
        for i in range(start, start + FLOOD_BATCH):
            self.step_and_publish(active[i % n])
        self._flood_next = (start + FLOOD_BATCH) % n
        # Send as fast as the slowest subscriber reads, no faster.
        while any(s.backlogged() for s in self.sessions.values()):
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 0.1)
        await asyncio.sleep(0)

    def notify_drained(self) -> None:
        """A connection's outbox has room again."""
        self._drained.set()

    async def run_replay(self, recording: Path) -> None:
        """Replay a recorded combined-stream session in a loop, keeping update ids increasing."""
        frames = _load_recording(recording)
        if not frames:
            return
        span = frames[-1][0] - frames[0][0]
        loop = 0
        while True:
            start = time.monotonic()
            for offset, stream, data in frames:
                speed = self.config.replay_speed
                if speed > 0:
                    delay = start + offset / speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if stream.endswith("@bookTicker"):
                    book = self.market.set(
                        data["s"], data["b"], data["B"], data["a"], data["A"],
                        u=data["u"] + loop * 10**7,
                    )  # fmt: skip
                    self.publish(stream, book.payload())
                else:
                    self.publish(stream, orjson.dumps(data))
            loop += 1
            if self.config.replay_speed <= 0 or span <= 0:
                await asyncio.sleep(0)

    def take_depth_delay(self) -> tuple[float, int] | None:
        """(delay ms, updates back) if the depth_delay fault holds this depth answer back."""
        fault = self.depth_delay
        until = fault["until"]
        if fault["remaining"] <= 0 and not (until and time.monotonic() < until):
            return None
        fault["remaining"] = max(0, fault["remaining"] - 1)
        self.depth_faults["depth_delay"] += 1
        return fault["delay_ms"], int(fault["stale_updates"])

    # -- REST weight ------------------------------------------------------------------

    def spend_weight(self, weight: int, ip: str = LOCAL) -> int:
        """Add a request's weight to its IP's last minute; returns that minute's total."""
        return self.limits.spend(ip, weight)


def _load_recording(path: Path) -> list[tuple[float, str, dict[str, Any]]]:
    """Frames of a recorded session: ``<epoch s>: <frame>`` lines after a URL line, or JSON lines."""
    frames: list[tuple[float, str, dict[str, Any]]] = []
    first: float | None = None
    for n, raw in enumerate(Path(path).read_bytes().splitlines()):
        line = raw.strip()
        if not line or line.startswith(b"wss://"):
            continue
        if line.startswith(b"{"):
            stamp, body = float(n) * 0.01, line
        else:
            head, _, body = line.partition(b": ")
            stamp = float(head)
        first = stamp if first is None else first
        frame = orjson.loads(body)
        frames.append((stamp - first, frame["stream"], frame["data"]))
    return frames
