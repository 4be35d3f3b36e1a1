"""The messenger's Prometheus metrics and health check, on ``METRICS_PORT``.

``/healthz`` answers 200 only while at least one connection to Binance is live (open, and heard
from within ``LIVENESS_TIMEOUT_MS``), or while this member owns no stream at all (the other
members carry every one: messenger.ownership), else 503: what a container's healthcheck asks. Every other
path is the metrics, read at scrape time from the counters the parts keep anyway, so the hot
path pays nothing for them: frames by kind, Redis writes and errors, reconnects by reason,
connections and streams per connection, control messages sent, liveness timeouts,
frame-to-Redis latency, freshness, the startup heap once frozen, and the egress's shared Binance
budget (used, taken, refused).
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from messenger.egress import CONNECTION, WEIGHT, Egress
from messenger.order_books import RESYNC_REASONS, STATES, OrderBooks

if TYPE_CHECKING:
    from messenger.service import Messenger

logger = logging.getLogger(__name__)

PREFIX = "transmute_messenger_"


class MessengerCollector(Collector):
    """Everything a scrape reports, read from the running messenger."""

    def __init__(self, messenger: Messenger) -> None:
        self.messenger = messenger

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        """One sample of every metric."""
        m = self.messenger
        supervisor, writer, book = m.supervisor, m.writer, m.book
        frames = CounterMetricFamily(
            PREFIX + "frames", "Market-data frames received, by stream kind", labels=["kind"]
        )
        for kind, n in sorted(supervisor.kind_frames().items()):
            frames.add_metric([kind], n)
        yield frames
        yield _counter("frames_malformed", "Frames skipped as malformed", supervisor.total("malformed"))
        yield _counter("frames_unrouted", "Frames for a stream not carried", supervisor.total("unknown"))
        yield _counter("frames_trailing", "Frames of a stream let go of, before the exchange stopped it",
                       supervisor.total("trailing"))  # fmt: skip
        yield _counter(
            "updates_older_dropped", "Updates dropped as older than the value held", book.older_dropped
        )
        yield _counter("redis_writes", "Values written to Redis", writer.writes)
        yield _counter(
            "redis_batches", "Round trips of the writer (values, liveness, stream states)", writer.batches
        )
        yield _counter(
            "redis_sole_writes", "Values written as plain SETs (writing alone)", writer.sole_writes
        )
        yield _counter(
            "redis_sole_refused", "Plain-SET batches refused: another messenger joined", writer.sole_refused
        )
        yield _counter("redis_deletes", "Keys deleted from Redis (values withdrawn)", writer.deletes)
        yield _counter("redis_errors", "Failed Redis writes (retried)", writer.errors)
        yield _gauge("redis_up", "1 while Redis takes the writes", int(writer.healthy))
        reconnects = CounterMetricFamily(
            PREFIX + "reconnects", "Connections ended, by reason", labels=["reason"]
        )
        for reason, n in sorted(supervisor.reconnects.items()):
            reconnects.add_metric([reason], n)
        yield reconnects
        yield _counter(
            "liveness_timeouts", "Connections declared dead for silence", supervisor.liveness_timeouts
        )
        yield _counter(
            "control_messages",
            "Messages sent to Binance (SUBSCRIBE, UNSUBSCRIBE, pings)",
            supervisor.total("requests_sent") + supervisor.total("pings_sent"),
        )
        conns = list(supervisor.conns)
        yield _gauge("connections", "Open WebSocket connections", len(conns))
        streams = GaugeMetricFamily(
            PREFIX + "streams", "Streams subscribed, per connection", labels=["connection"]
        )
        for conn in conns:
            streams.add_metric([str(conn.id)], len(conn.subscribed))
        yield streams
        tracked, fresh = book.freshness(time.monotonic())
        yield _gauge("tracked_keys", "Keys streamed", tracked)
        yield _gauge("fresh_keys", "Keys streamed with a value that may be served now", fresh)
        yield _gauge("heap_frozen_objects", "Objects kept out of full garbage collections (messenger.heap), "
                     "0 until the startup heap is frozen", gc.get_freeze_count())  # fmt: skip
        yield _counter("rest_seeds", "Values seeded over REST", m.seeder.seeded)
        yield _counter("rest_calls", "REST calls made to Binance", m.rest.calls)
        yield _counter("rest_rate_limited", "REST answers of 429 or 418", m.rest.rate_limited)
        yield from _egress(m.egress)
        klines = m.klines
        yield _gauge("kline_series", "Candle series kept (symbol and interval)", len(klines.followed))
        yield _counter("kline_candles_appended", "Closed candles appended from the streams", klines.appended)
        yield _counter(
            "kline_candles_fetched", "Candles fetched over REST (seeds, gaps, backfills)", klines.fetched
        )
        yield _counter("kline_rest_calls", "REST calls made for candles", klines.calls)
        yield _counter(
            "kline_writes_refused", "Candle writes refused as leaving a hole (then fetched)", klines.refused
        )
        yield from _order_books(m.books)
        latency = writer.latency
        yield HistogramMetricFamily(
            PREFIX + "frame_to_redis_seconds",
            "From a frame's arrival to its value's acknowledgement by Redis",
            buckets=latency.cumulative(),
            sum_value=latency.sum,
        )


def _egress(egress: Egress) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The Binance budget shared by the members on this egress address (messenger.egress)."""
    label = ["egress", "kind"]
    used = GaugeMetricFamily(
        PREFIX + "egress_used",
        "Budget in use on this egress as last seen (connections: in the window; weight: in the minute)",
        labels=label,
    )
    limit = GaugeMetricFamily(PREFIX + "egress_limit", "The egress's budget", labels=label)
    taken = CounterMetricFamily(PREFIX + "egress_taken", "Takes granted to this member", labels=label)
    for kind, value in sorted(egress.used.items()):
        used.add_metric([egress.name, kind], value)
    limit.add_metric([egress.name, CONNECTION], egress.connections)
    limit.add_metric([egress.name, WEIGHT], egress.weight_per_minute)
    for kind in (CONNECTION, WEIGHT):
        taken.add_metric([egress.name, kind], egress.granted.get(kind, 0))
    refused = CounterMetricFamily(
        PREFIX + "egress_refused",
        "Takes refused to this member, by why (budget spent, a shared back-off, Redis unreachable)",
        labels=[*label, "why"],
    )
    for (kind, why), n in sorted(egress.refused.items()):
        refused.add_metric([egress.name, kind, why], n)
    yield from (used, limit, taken, refused)
    yield _gauge("egress_backoff_seconds", "What is left of a Retry-After this member knows of",
                 egress.backoff_left_s())  # fmt: skip
    yield _counter("egress_backoffs_shared", "429/418 back-offs this member shared", egress.backoffs_shared)
    yield _counter(
        "egress_weight_raised", "Times Binance's reported weight raised the budget's window", egress.raised
    )


def _order_books(books: OrderBooks) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The local order books: where each stands, what they did (messenger.order_books)."""
    states = GaugeMetricFamily(PREFIX + "order_books", "Local order books by state", labels=["state"])
    counted = books.states()
    for state in STATES:
        states.add_metric([state], counted.get(state, 0))
    yield states
    resyncs = CounterMetricFamily(
        PREFIX + "order_book_resyncs", "Books found out of sync and started over, by why", labels=["reason"]
    )
    for reason in RESYNC_REASONS:
        resyncs.add_metric([reason], books.resyncs.get(reason, 0))
    yield resyncs
    yield _counter("order_book_events", "Diff depth events received for kept books", books.events)
    yield _counter("order_book_events_applied", "Diff depth events applied to a book in sync", books.applied)
    yield _counter("order_book_snapshots", "Book snapshots fetched over REST", books.snapshots)
    yield _counter(
        "order_book_refreshes", "Books eaten into past what is written, swapped for a fresh snapshot's",
        books.refreshes,
    )  # fmt: skip
    yield _counter("order_book_snapshot_failures", "Book snapshots that failed", books.snapshot_failures)
    yield _counter(
        "order_book_snapshot_refetches", "Snapshots older than the first buffered event, fetched again",
        books.refetches,
    )  # fmt: skip


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def live_connections(messenger: Messenger) -> int:
    """Connections open and heard from within the liveness timeout."""
    now, timeout_s = time.monotonic(), messenger.settings.liveness_timeout_ms / 1000
    return sum(conn.alive(now, timeout_s) for conn in list(messenger.supervisor.conns))


def app(messenger: Messenger, registry: CollectorRegistry) -> WSGIApplication:
    """``/healthz``, and the metrics on every other path."""
    metrics = make_wsgi_app(registry)

    def respond(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            scrape: Iterable[bytes] = metrics(environ, start_response)
            return scrape
        live = live_connections(messenger)
        idle = not live and messenger.carries_nothing()
        body = orjson.dumps({"live_connections": live, **({"carries_nothing": True} if idle else {})})
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response("200 OK" if live or idle else "503 Service Unavailable", headers)
        return [body]

    return respond


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes and health checks are not news."""


def serve(messenger: Messenger, host: str, port: int) -> None:
    """Serve ``/metrics`` and ``/healthz`` on a thread of their own."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(MessengerCollector(messenger))
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    httpd = make_server(str(address[0]), port, app(messenger, registry), Server, _QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics: on http://%s:%d/metrics (health: /healthz)", host, port)
