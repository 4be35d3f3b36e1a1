"""The messenger assembled: book, Redis writer, REST seeder, catalog, demand, membership and
supervisor.

One messenger is one member of the service (messenger.membership): it carries the wanted
streams it owns (messenger.ownership), and a stream it no longer owns until another member
reports it live (make before break) or HANDOVER_S has passed. Stopped cleanly, it first owns
nothing, waits (at most HANDOVER_S) until the others carry its streams, then lets go.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis

import contract.redis_client
from contract.keys import member_key
from contract.settings import Settings
from contract.trade_history import BACKFILL_SERIES
from messenger import metrics, worker
from messenger.backfill import Backfills
from messenger.binance import BOOK_TICKER, KINDS, StreamKind
from messenger.book import Book
from messenger.catalog import Catalog
from messenger.connection import CLOSED, OPEN
from messenger.demand import DemandReader
from messenger.egress import Egress
from messenger.heap import Heap
from messenger.kline_history import KlineHistory
from messenger.membership import Membership
from messenger.order_books import OrderBooks
from messenger.ownership import owns
from messenger.planner import Plan, plan
from messenger.reachability import WEBSOCKET, Reachability
from messenger.rest import BinanceRest
from messenger.routes import Route
from messenger.seeder import Seeder
from messenger.signals import StopFlags
from messenger.stats import Stats
from messenger.supervisor import Supervisor
from messenger.trade_history import TradeHistory
from messenger.writer import Writer, records_start

logger = logging.getLogger(__name__)

TICK_S = 0.05
EGRESS_TIMEOUT_S = 0.5
# A stream this member no longer owns is carried at most this long for its new owner to catch
# up; a member stopping cleanly waits at most this long for the others to take its streams.
HANDOVER_S = 10.0
# Nothing is planned before the members are known (a member that planned alone would carry
# everything for a moment), unless Redis does not answer for this long.
FIRST_READ_WAIT_S = 3.0


def redis_client(settings: Settings, timeout_s: float = 2.0) -> redis.Redis:
    """A client that fails fast: every user of it owns its retries and their backoff."""
    return contract.redis_client.redis_client(settings, timeout_s=timeout_s, retries=0)


class Messenger:
    """Everything the messenger process runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.book = Book(settings.liveness_timeout_ms / 1000)
        # Names this run's connections in Redis: a restarted messenger never inherits the liveness
        # of a dead one's connection that happened to have the same number.
        self.id = secrets.token_hex(4)
        self.demand = DemandReader(redis_client(settings), settings.demand_idle_s)
        self.writer = Writer(
            self.book,
            redis_client(settings),
            settings.snapshot_ttl_ms,
            settings.refresh_interval_ms / 1000,
            self.id,
            watched=lambda: self.demand.watched,
            status=self.status,
            alone=lambda: self.membership.live == (self.id,),
        )
        # Taken from on the supervisor's loop too: a Redis that does not answer holds it 0.5 s at most.
        self.egress = Egress(
            redis_client(settings, timeout_s=EGRESS_TIMEOUT_S),
            settings.egress,
            settings.egress_connections,
            settings.egress_connection_window_s,
            settings.egress_rest_weight,
        )
        self.rest = BinanceRest(settings.binance_rest_url, egress=self.egress)
        self.history = TradeHistory(
            redis_client(settings), self.rest, settings.trade_history_max, carried=self._carried_lists
        )
        self.book.on_item = self.history.add
        self.seeder = Seeder(self.book, self.rest, self.history)
        self.klines = KlineHistory(
            redis_client(settings), self.rest, settings.kline_history, settings.kline_history_max
        )
        self.backfills = Backfills(redis_client(settings))
        self.backfills.register(lambda series: series in BACKFILL_SERIES, self.history.backfill)
        self.backfills.register(
            lambda series: series.startswith(("kline_", "klineto_")), self.klines.backfill
        )
        self.reach = Reachability()
        self.catalog = Catalog(self.rest, redis_client(settings), settings.catalog_refresh_s, self.reach)
        self.books = OrderBooks(
            self.book,
            self.rest,
            settings.depth_snapshot_limit,
            levels=lambda: self.demand.book_levels,
            client=redis_client(settings),
        )
        self.supervisor = Supervisor(
            settings,
            self.book,
            self.seeder,
            candles=self.klines,
            diffs=self.books.event,
            egress=self.egress,
        )
        self.stats = Stats(self.supervisor, self.book, self.writer, settings.stats_interval_s)
        self.membership = Membership(
            redis_client(settings),
            self.id,
            settings.liveness_timeout_ms,
            min(settings.refresh_interval_ms / 1000, settings.liveness_timeout_ms / 4000),
            {},
            records_start(self.id),
        )
        self._releasing: dict[str, float] = {}  # streams no longer owned -> carried until then
        self._started = time.monotonic()
        self._planned_for: tuple[Any, ...] | None = None
        self._next_plan = 0.0
        self._not_trading_logged: set[str] = set()
        self._over_cap = 0  # demanded streams left out by the last plan (DEMAND_MAX_STREAMS)

    def run(
        self,
        pinned: list[str],
        all_symbols: bool,
        flags: StopFlags,
        kinds: Sequence[StreamKind] = (BOOK_TICKER,),
    ) -> None:
        """Stream ``pinned`` (and every trading symbol with ``all_symbols``) in ``kinds``, and
        whatever users ask for, until a stop flag is set; then stop cleanly."""
        self.membership.own_wants = {
            "symbols": list(pinned), "all": all_symbols, "kinds": [k.name for k in kinds]}  # fmt: skip
        parts = (self.membership, self.writer, self.seeder, self.klines, self.books, self.history,
                 self.backfills, self.catalog, self.demand)  # fmt: skip
        for part in parts:
            part.start()
        if self.settings.metrics_port:
            try:
                metrics.serve(self, self.settings.host, self.settings.metrics_port)
            except OSError as exc:
                logger.warning("metrics: cannot listen on %s:%d (%s); running without",
                               self.settings.host, self.settings.metrics_port, exc)  # fmt: skip
        if warning := contract.redis_client.sentinel_warning(self.settings):
            logger.warning("redis: %s", warning)
        everything = " and every trading symbol" if all_symbols else ""
        logger.info("messenger: pinned %s%s (%s); any other trading symbol and kind on demand",
                    ", ".join(pinned) or "nothing", everything, ", ".join(k.name for k in kinds))  # fmt: skip
        heap = Heap(time.monotonic())
        try:
            while not flags.stop.is_set():
                worker.check(parts)  # a part that died stops the process (messenger.worker)
                now = time.monotonic()
                heap.tick(now)
                self._replan(pinned, all_symbols, kinds, now)
                self._watch_connects()
                self.supervisor.tick(now)
                self.stats.maybe_log(now)
                flags.stop.wait(TICK_S)
            if not flags.force:
                self._leave(pinned, all_symbols, kinds, flags)
        finally:
            self.stop(flags.force)

    def _leave(
        self, pinned: list[str], all_symbols: bool, kinds: Sequence[StreamKind], flags: StopFlags
    ) -> None:
        """Own nothing, and carry on until the other members report this one's streams live
        (at most HANDOVER_S, or until a second Ctrl-C); at once if there is no other member."""
        self.membership.leave()
        deadline = time.monotonic() + HANDOVER_S
        carried = len(self.supervisor.routes)
        logger.info("member %s: leaving; handing %d streams over", self.id, carried)
        while self.supervisor.routes and not flags.force:
            others = [m for m in self.membership.eligible if m != self.id]
            if not others or not self._heard_from(others):
                break  # no member to hand over to (a dead one stays in the list for its liveness timeout)
            now = time.monotonic()
            if now >= deadline:
                logger.warning("member %s: %d streams not taken over within %.0f s; letting go",
                               self.id, len(self.supervisor.routes), HANDOVER_S)  # fmt: skip
                break
            self._replan(pinned, all_symbols, kinds, now)
            self._watch_connects()
            self.supervisor.tick(now)
            time.sleep(TICK_S)
        if carried and not self.supervisor.routes:
            logger.info("member %s: every stream handed over", self.id)

    def _heard_from(self, members: list[str]) -> bool:
        """Whether any of ``members`` has a heartbeat in Redis now (it expires SNAPSHOT_TTL_MS after
        a member's last write: a member killed a moment ago is already silent there)."""
        try:
            return bool(self.membership.client.exists(*(member_key(m) for m in members)))
        except redis.RedisError:
            return True  # cannot tell: wait, as bounded by HANDOVER_S

    def carries_nothing(self) -> bool:
        """Planned, and owning no stream now: the other members carry them all (nothing to be live for)."""
        return self._planned_for is not None and not self.supervisor.routes

    def _replan(self, pinned: list[str], all_symbols: bool, kinds: Sequence[StreamKind], now: float) -> None:
        members = self.membership
        if not members.version and now < self._started + FIRST_READ_WAIT_S:
            return
        inputs = (self.catalog.version, self.demand.version, members.version, members.handed_over,
                  members.taken)  # fmt: skip
        if inputs == self._planned_for and now < self._next_plan:
            return  # nothing the plan depends on has changed: planning again would give the same
        self._planned_for = inputs
        wanted = plan(
            pinned,
            all_symbols,
            self.demand.latest,
            self.catalog.trading,
            time.time() * 1000,
            self.settings.demand_idle_s * 1000,
            kinds,
            self.settings.demand_max_streams,
        )
        if wanted.invalid_demand:
            self.demand.forget(wanted.invalid_demand)
        fresh = [s for s in wanted.not_trading if s not in self._not_trading_logged]
        if fresh:
            logger.warning("messenger: not streaming %s: not trading on the exchange", ", ".join(fresh))
            self._not_trading_logged.update(fresh)
        if bool(wanted.over_cap) != bool(self._over_cap):  # logged when it starts and ends
            logger.warning("messenger: %d streams asked for are left out: at most %d are carried on demand",
                           wanted.over_cap, self.settings.demand_max_streams)  # fmt: skip
        self._over_cap = wanted.over_cap
        self._pin_others(wanted, pinned, all_symbols, kinds)
        routes = self._owned(wanted, now)
        self.supervisor.pin(wanted.pinned & routes.keys())
        added, removed = self.supervisor.set_routes(routes)
        self.klines.follow({route.series for route in routes.values() if route.kind.candles})
        self.books.follow({route.symbol: route.key for route in routes.values() if route.kind.diff})
        if added or removed:
            logger.info("messenger: +%d -%d streams, %d in all", added, removed, len(routes))
        # The plan changes with its inputs above, each with a version (idle demand among them: the
        # demand reader drops it within its poll, or its backoff while Redis cannot be read), and
        # with time only when a stream handed over is no longer carried. Planned again then, not
        # every so often: a plan of every stream costs milliseconds of the GIL the readers and the
        # writer share (with --all, a burst a second).
        self._next_plan = min(self._releasing.values(), default=math.inf)

    def _pin_others(
        self, wanted: Plan, pinned: list[str], all_symbols: bool, kinds: Sequence[StreamKind]
    ) -> None:
        """Add what the other members pin: every member plans over the same wanted streams, so
        each of those has owners whoever pinned it."""
        own = {"symbols": list(pinned), "all": all_symbols, "kinds": [k.name for k in kinds]}
        seen = [own]
        for spec in self.membership.wants.values():
            if spec in seen:
                continue
            seen.append(spec)
            spec_kinds = [KINDS[name] for name in spec.get("kinds", ()) if name in KINDS]
            theirs = plan(
                [str(s) for s in spec.get("symbols", ())], bool(spec.get("all")), {},
                self.catalog.trading, 0.0, 0.0, spec_kinds,
            )  # fmt: skip
            for stream, route in theirs.routes.items():
                wanted.routes.setdefault(stream, route)
                wanted.pinned.add(stream)

    def _owned(self, wanted: Plan, now: float) -> dict[str, Route]:
        """The wanted streams this member owns, and those it no longer owns but still carries
        (at most HANDOVER_S) until another member reports them live, then without writing them
        until that member has written them (messenger.membership)."""
        members = self.membership
        eligible, replicas = members.eligible, self.settings.replicas
        routes = {s: r for s, r in wanted.routes.items() if owns(self.id, r.key, eligible, replicas)}
        others = any(m != self.id for m in eligible)
        releasing: dict[str, float] = {}
        for stream, route in self.supervisor.routes.items():
            if stream in routes or stream not in wanted.routes:
                continue  # owned, or wanted by no one
            if not others:  # leaving, with no one to hand it to: carried until the end
                routes[stream] = route
                continue
            until = self._releasing.get(stream, now + HANDOVER_S)
            if route.key not in members.taken and now < until:
                releasing[stream] = until
                routes[stream] = route
        self._releasing = releasing
        members.asked = frozenset(routes[s].key for s in releasing)
        muted = {key: members.muted.get(key, time.monotonic()) for key in members.asked & members.handed_over}
        members.muted = muted
        self.book.mute(frozenset(muted))
        return routes

    def _watch_connects(self) -> None:
        """Tell ``reach`` whether connections get through (before the supervisor forgets the ones
        that did not)."""
        url = self.settings.binance_ws_url
        for conn in self.supervisor.conns:
            if conn.state == OPEN:
                self.reach.reached(WEBSOCKET, url)
            elif conn.state == CLOSED and conn.close_reason.startswith("connect"):
                self.reach.failed(WEBSOCKET, url, conn.close_reason)

    def _carried_lists(self) -> list[str]:
        """The tails of the kept lists of the streams carried now (their TTL is renewed)."""
        return [r.history_key for r in list(self.supervisor.routes.values()) if r.history_key]

    def status(self) -> dict[str, Any]:
        """What the messenger is doing, for its heartbeat in Redis and the status page.

        ``binance``: ``connected`` while a connection is live, ``unreachable`` while none is and the
        last attempts failed (``binance_errors`` says where and how), ``connecting`` otherwise.
        """
        now = time.monotonic()
        tracked, fresh = self.book.freshness(now)
        conns = list(self.supervisor.conns)
        live = sum(1 for c in conns if c.alive(now, self.settings.liveness_timeout_ms / 1000))
        errors = self.reach.failures()
        return {
            "pid": os.getpid(),
            "member": self.id,
            "leaving": self.membership.leaving,
            # The members this one spreads streams over: every member sees the same once settled.
            "view": list(self.membership.eligible),
            "handing_over": len(self._releasing),
            "binance": "connected" if live else "unreachable" if errors else "connecting",
            "binance_errors": errors,
            "connections": len(conns),
            "live_connections": live,
            "streams_wanted": len(self.supervisor.routes),
            "streams": sum(len(c.subscribed) for c in conns),
            "tracked": tracked,
            "fresh": fresh,
            "redis": self.writer.healthy,
            "catalog_symbols": len(self.catalog.statuses or ()),
            "kline_series": len(self.klines.followed),
            **self.books.status(),
        }

    def stop(self, force: bool = False) -> None:
        """Close connections and delete the keys we vouched for: they are no longer current."""
        logger.info("messenger: stopping%s", " now" if force else "")
        for part in (self.seeder, self.klines, self.books, self.history, self.backfills, self.catalog,
                     self.demand):  # fmt: skip
            part.stop()
        # Readers are not waited for long: the book has let go of their connections already.
        self.supervisor.close_all(timeout_s=0.0 if force else 0.5)
        self.writer.stop(timeout_s=0.5 if force else 2.0)
        self.membership.stop()
