"""The messenger's Prometheus metrics, on ``METRICS_PORT``.

Read at scrape time from the counters the parts keep anyway, so the hot path pays nothing for
them: frames by kind, Redis writes and errors, reconnects by reason, connections and streams
per connection, control messages sent, liveness timeouts, frame-to-Redis latency, freshness.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

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
        yield _counter(
            "updates_older_dropped", "Updates dropped as older than the value held", book.older_dropped
        )
        yield _counter("redis_writes", "Values written to Redis", writer.writes)
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
        yield _counter("rest_seeds", "Values seeded over REST", m.seeder.seeded)
        yield _counter("rest_calls", "REST calls made to Binance", m.rest.calls)
        yield _counter("rest_rate_limited", "REST answers of 429 or 418", m.rest.rate_limited)
        latency = writer.latency
        yield HistogramMetricFamily(
            PREFIX + "frame_to_redis_seconds",
            "From a frame's arrival to its value's acknowledgement by Redis",
            buckets=latency.cumulative(),
            sum_value=latency.sum,
        )


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def serve(messenger: Messenger, host: str, port: int) -> None:
    """Serve ``/metrics`` on a thread of prometheus_client's."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(MessengerCollector(messenger))
    start_http_server(port, addr=host, registry=registry)
    logger.info("metrics: on http://%s:%d/metrics", host, port)
