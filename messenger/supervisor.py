"""Keeps every wanted stream on a live connection: opens, watches, replaces and retires them.

- Liveness: a connection that has sent nothing (no data, no pong to our pings) for
  ``LIVENESS_TIMEOUT_MS`` is presumed dead; its keys are invalidated at once and it is replaced.
- Reconnects back off exponentially with jitter, capped, each connection on its own: one
  connection's trouble (a drop, a 1008 "Too many requests" close, which backs off longest)
  never delays replacing another. A backoff resets once its connection has subscribed and
  been heard from.
- What Binance counts per IP holds back every new connection: a handshake refused with
  HTTP 429 or 418 (or a REST call answered so) until its ``Retry-After`` has passed, and the
  budget of new connections (Binance: 300 per 5 minutes), both shared in Redis by every member
  behind the same egress address (messenger.egress).
- Before the 24 h cut, or when the server announces a shutdown, a connection is replaced
  make-before-break: the successor subscribes, catches up, and only then is the old one closed.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from contract.settings import Settings
from messenger.admission import BUDGET_WHY, Admission
from messenger.backoff import Backoff
from messenger.book import Book, Voucher
from messenger.connection import CLOSED, CONNECT_TIMEOUT_S, OPEN, CandleSink, Connection, DiffSink
from messenger.egress import Egress
from messenger.routes import Route
from messenger.seeder import Seeder

logger = logging.getLogger(__name__)

# An old connection is closed at the latest this long after its successor was opened.
HANDOVER_LIMIT_S = 60.0
POLICY_VIOLATION = 1008
COUNTERS = ("frames", "malformed", "unknown", "trailing", "refused", "requests_sent", "pings_sent")


@dataclass
class Reopen:
    """The streams of a connection that ended, to be carried again from ``at`` on."""

    streams: list[str]
    at: float
    backoff: Backoff  # the ended connection's, carried on to its replacement
    promised: float  # when its log line said the reconnect would be (an IP-wide wait included)


class Supervisor:
    """Owns the connections; driven by ``tick()`` from one thread."""

    def __init__(
        self,
        settings: Settings,
        book: Book,
        seeder: Seeder,
        rand: Callable[[], float] = random.random,
        candles: CandleSink | None = None,
        diffs: DiffSink | None = None,
        egress: Egress | None = None,
    ) -> None:
        self.settings = settings
        self.candles = candles  # where kline frames also go (messenger.kline_history)
        self.diffs = diffs  # where diff depth events go (messenger.order_books)
        self.book = book
        self.seeder = seeder
        self.routes: dict[str, Route] = {}  # every stream we carry, read by the connections
        self.pinned: frozenset[str] = frozenset()  # of those, the ones carried whatever users ask
        self.conns: list[Connection] = []
        self.owner: dict[str, Connection] = {}
        self.reconnects: Counter[str] = Counter()
        # egress: the connection budget and back-off shared with every member on the same address.
        self.admission = Admission(lambda: seeder.rest.ip_wait_until, egress)
        self._unplaced: dict[str, None] = {}
        self._reopen: list[Reopen] = []
        self._rand = rand
        self._backoffs: dict[Connection, Backoff] = {}  # each connection's own
        self._replace_at: dict[Connection, float] = {}  # a failed replacement is tried again then
        self._held_said = 0.0  # the IP-wide wait last announced to reconnects already due
        self._successor: dict[Connection, Connection] = {}
        self._handover_started: dict[Connection, float] = {}
        self._lifetime: dict[Connection, float] = {}
        self._retired: set[Connection] = set()
        # What connections that are gone had counted (their own counters go with them).
        self.closed: Counter[str] = Counter()
        self.closed_kind_frames: Counter[str] = Counter()
        self.liveness_timeouts = 0
        self._liveness_s = settings.liveness_timeout_ms / 1000

    # -- what to carry ----------------------------------------------------------------

    def set_routes(self, routes: Mapping[str, Route]) -> tuple[int, int]:
        """Carry exactly these streams; returns how many were added and removed."""
        added = [r for s, r in routes.items() if s not in self.routes]
        removed = [s for s in self.routes if s not in routes]
        self.want(added)
        self.unwant(removed)
        return len(added), len(removed)

    def want(self, routes: Iterable[Route]) -> None:
        """Carry these streams (already carried ones are left alone)."""
        keys = []
        for route in routes:
            if route.stream not in self.routes:
                self.routes[route.stream] = route
                self._unplaced[route.stream] = None
                keys.append(route.key)
        self.book.track(keys)

    def unwant(self, streams: Iterable[str]) -> None:
        """Stop carrying these streams: unsubscribed, their values withdrawn at once."""
        gone = [s for s in streams if s in self.routes]
        for conn in self.conns:
            conn.remove_streams([s for s in gone if s in conn.streams])
        for stream in gone:
            self._unplaced.pop(stream, None)
            self.owner.pop(stream, None)
        self.book.untrack([self.routes.pop(s).key for s in gone])

    # -- the loop ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One round: check every connection, place streams, move vouching, send."""
        for conn in list(self.conns):
            self._check(conn, now)
        self._handovers(now)
        self._place(now)
        self.book.inherit()
        for conn in self.conns:
            conn.pump(now)

    def close_all(self, timeout_s: float = 2.0) -> None:
        """Close every connection politely and let go of every key (graceful stop)."""
        for conn in self.conns:
            conn.close("messenger stopping")
            self.book.release(conn)
        deadline = time.monotonic() + timeout_s
        for conn in self.conns:
            conn.join(max(0.0, deadline - time.monotonic()))
        self.conns.clear()

    def _check(self, conn: Connection, now: float) -> None:
        if conn.state == CLOSED:
            self._closed(conn, now)
        elif conn.state == OPEN:
            if not conn.alive(now, self._liveness_s):
                logger.warning("%s: nothing heard for %.1f s; presumed dead",
                               conn, now - conn.last_heard)  # fmt: skip
                conn.abort(f"silent for {now - conn.last_heard:.1f} s")
                self.liveness_timeouts += 1
                self._reseed(self.book.release(conn))
            elif conn not in self._successor and not self._is_successor(conn):
                opened_at = conn.opened_at or now
                if not conn.streams and conn not in self._retired:
                    conn.close("no streams left")
                    self._retired.add(conn)
                elif conn.shutdown_announced:
                    self._replace(conn, now, "server shutdown announced")
                elif now - opened_at >= self._lifetime[conn]:
                    self._replace(conn, now, "connection age limit")
        elif now - conn.created_at > CONNECT_TIMEOUT_S + 5:
            conn.abort("connect timed out")

    def frames(self) -> int:
        """Frames received since start, on every connection."""
        return self.total("frames")

    def total(self, counter: str) -> int:
        """A connection counter (frames, malformed, unknown, trailing, refused, requests_sent, pings_sent)
        summed over every connection since start."""
        return self.closed[counter] + sum(int(getattr(c, counter)) for c in self.conns)

    def kind_frames(self) -> Counter[str]:
        """Market-data frames by stream kind since start."""
        total = Counter(self.closed_kind_frames)
        for conn in self.conns:
            total.update(dict(conn.kind_frames))
        return total

    def _closed(self, conn: Connection, now: float) -> None:
        self.conns.remove(conn)
        for counter in COUNTERS:
            self.closed[counter] += getattr(conn, counter)
        self.closed_kind_frames.update(dict(conn.kind_frames))
        self._lifetime.pop(conn, None)
        self._replace_at.pop(conn, None)
        backoff = self._backoffs.pop(conn, None) or self._new_backoff()
        self._reseed(self.book.release(conn))
        reason = conn.close_reason or "closed"
        wait_s = self.admission.refused(conn.refused_status, conn.retry_after, now)
        if wait_s is not None:
            logger.warning("%s: Binance refused the connection (HTTP %d); no new connection for %.1f s "
                           "(its Retry-After)", conn, conn.refused_status, wait_s)  # fmt: skip
        if conn in self._retired:
            self._retired.discard(conn)
            logger.info("%s: closed (%s)", conn, reason)
            return
        self.reconnects[_reason_kind(conn)] += 1
        if conn in self._successor:  # an old connection, closed (by us or not) during handover
            successor = self._successor.pop(conn)
            self._handover_started.pop(conn, None)
            logger.info("%s: closed (%s); its streams are on %s", conn, reason, successor)
            return
        predecessor = self._predecessor(conn)
        if conn.healthy():
            backoff.reset()
        # A 1008 is about this connection (it sent too much): it alone waits the longest.
        floor = self.settings.reconnect_max_ms / 1000 if conn.close_code == POLICY_VIOLATION else 0.0
        at = now + backoff.next_delay(floor)
        if predecessor is not None:  # a successor failed: the old connection still carries
            self._successor.pop(predecessor)
            self._handover_started.pop(predecessor, None)
            for stream in predecessor.streams:
                self.owner[stream] = predecessor
            for stream in conn.streams:
                if self.owner.get(stream) is conn:
                    del self.owner[stream]
                    self._unplaced[stream] = None
            self._replace_at[predecessor] = at
            logger.warning("%s: replacement failed (%s); retrying in %s", conn, reason, self._wait(at, now))
            return
        streams = [s for s in conn.streams if self.owner.get(s) is conn]
        for stream in streams:
            del self.owner[stream]
        if streams:
            self._reopen.append(Reopen(streams, at, backoff, max(at, self.admission.closed_until()[0])))
        logger.warning("%s: %s; reconnecting in %s", conn, reason, self._wait(at, now))

    def _new_backoff(self) -> Backoff:
        settings = self.settings
        return Backoff(settings.reconnect_min_ms / 1000, settings.reconnect_max_ms / 1000, self._rand)

    def _wait(self, at: float, now: float) -> str:
        """How long until a connection due ``at`` is opened, and what it waits for if not its backoff."""
        gate, why = self.admission.closed_until()
        if gate > at:
            return f"{gate - now:.1f} s (waiting for {why})"
        return f"{at - now:.1f} s"

    def _say_held(self, due: list[Reopen], now: float) -> None:
        """Reconnects due now wait for an IP-wide gate their log line did not know of: say so, once."""
        until, why = self.admission.closed_until()
        late = [e for e in due if e.promised < until]
        if late and until != self._held_said and why != BUDGET_WHY:  # that one says it
            self._held_said = until
            logger.warning(
                "conn: %d reconnect(s) due now wait %.1f s more for %s", len(late), until - now, why
            )

    def _replace(self, conn: Connection, now: float, why: str) -> None:
        if now < self._replace_at.get(conn, 0.0) or not self.admission.is_open(now):
            return
        successor = self._open(list(conn.streams), now, self._backoffs.get(conn))
        if successor is None:
            return
        self._successor[conn] = successor
        self._handover_started[conn] = now
        logger.info("%s: replacing with %s (%s), make before break", conn, successor, why)

    def _handovers(self, now: float) -> None:
        for old, new in list(self._successor.items()):
            caught_up = new.state == OPEN and not new.busy() and self.book.caught_up(new)
            late = now - self._handover_started[old] > HANDOVER_LIMIT_S
            if caught_up or late:
                old.close("replaced" if caught_up else "replacement late")
                self._handover_started[old] = float("inf")

    def _place(self, now: float) -> None:
        due = [e for e in self._reopen if e.at <= now]
        if due and not self.admission.is_open(now):
            self._say_held(due, now)
        elif due:
            for entry in due:
                streams = [s for s in entry.streams if s in self.routes and s not in self.owner]
                if streams and self._open(streams, now, entry.backoff) is None:
                    break
                self._reopen.remove(entry)
        if not self._unplaced:
            return
        streams = [s for s in self._unplaced if s not in self.owner]
        # Pinned streams never share a connection with on-demand ones, so the SUBSCRIBE and
        # UNSUBSCRIBE churn of on-demand streams, its message budget and its reconnects never
        # touch them. Pinned ones first: they get the connection budget first.
        left = self._place_group([s for s in streams if s in self.pinned], True, now)
        left += self._place_group([s for s in streams if s not in self.pinned], False, now)
        self._unplaced = dict.fromkeys(left)

    def _place_group(self, streams: list[str], pinned: bool, now: float) -> list[str]:
        """Put streams of one group (pinned or on demand) on that group's connections with room,
        then on new ones while connections may be opened; returns those left unplaced."""
        cap = self.settings.max_streams_per_connection
        for conn in self.conns:
            if not streams:
                return streams
            room = cap - len(conn.streams)
            # A connection still connecting takes them too: it subscribes them once open.
            usable = conn.state != CLOSED and conn not in self._successor and conn not in self._retired
            if room > 0 and usable and self._carries_pinned(conn) == pinned:
                batch, streams = streams[:room], streams[room:]
                conn.add_streams(batch)
                for stream in batch:
                    self.owner[stream] = conn
        while streams and self.admission.is_open(now):
            batch = streams[:cap]
            if self._open(batch, now) is None:
                break
            streams = streams[cap:]
        return streams

    def _carries_pinned(self, conn: Connection) -> bool:
        """Whether a connection is one of the pinned streams' (placement keeps the groups apart)."""
        return any(stream in self.pinned for stream in conn.streams)

    def pin(self, streams: Iterable[str]) -> None:
        """The streams carried whatever users ask: placed apart from on-demand ones."""
        self.pinned = frozenset(streams)

    def _open(self, streams: list[str], now: float, backoff: Backoff | None = None) -> Connection | None:
        if not self.admission.take(now):
            return None
        conn = Connection(
            self.settings.binance_ws_url,
            streams,
            self.routes,
            self.book,
            self.seeder,
            self.settings.ping_interval_ms / 1000,
            self.candles,
            self.diffs,
            self.settings.ws_transport,
        )
        max_age = self.settings.connection_max_age_s
        # Jitter staggers the replacement of connections that were opened together.
        self._lifetime[conn] = max_age + random.uniform(0, min(0.02 * max_age, 1800.0))
        self.conns.append(conn)
        self._backoffs[conn] = backoff or self._new_backoff()
        for stream in streams:
            self.owner[stream] = conn
        logger.info("%s: connecting to %s with %d streams", conn, self.settings.binance_ws_url, len(streams))
        conn.start()
        return conn

    def _reseed(self, pairs: list[tuple[Voucher, str]]) -> None:
        by_conn: dict[Voucher, list[Route]] = {}
        key_routes = {r.key: r for r in self.routes.values()}
        for conn, key in pairs:
            if key in key_routes:
                by_conn.setdefault(conn, []).append(key_routes[key])
        for conn, routes in by_conn.items():
            self.seeder.request(conn, routes)

    def _is_successor(self, conn: Connection) -> bool:
        return conn in self._successor.values()

    def _predecessor(self, conn: Connection) -> Connection | None:
        return next((old for old, new in self._successor.items() if new is conn), None)


def _reason_kind(conn: Connection) -> str:
    reason = conn.close_reason
    for kind in ("silent", "connect", "dropped", "replaced", "stopping", "late"):
        if kind in reason:
            return kind
    if conn.close_code is not None:
        return f"close {conn.close_code}"
    return "other"
