"""Prometheus metrics of the server, at ``GET /metrics``.

Under gunicorn every worker process writes its own samples to PROMETHEUS_MULTIPROC_DIR (set up
by server.gunicorn_conf before this module is imported) and ``/metrics`` adds them up, so the
numbers are the whole server's, whichever worker answers the scrape.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

bp = Blueprint("metrics", __name__)

REQUESTS = Counter("transmute_http_requests", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "transmute_http_request_duration_seconds",
    "Time to answer a request (to the first byte of a stream)",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STALE = Counter("transmute_stale_answers", "Answers that had no current value to give", ["api"])
SPAWNS = Counter("transmute_on_demand_spawns", "Streams asked of the messenger on demand", ["kind"])
DEPTH_UNAVAILABLE = Counter(
    "transmute_depth_unavailable",
    "Order book answers (or live-push events) that had no book to give, by reason: redis, symbol_list, "
    "subscribing, not_vouched, syncing, resyncing, out_of_sync, levels_pending, max_age, gone",
    ["reason"],
)
REFUSALS = Counter(
    "transmute_on_demand_refusals",
    "Requests refused (429) for starting new streams over a limit: cap or client_rate",
    ["reason"],
)


def register(app: Flask) -> None:
    """Time and count every request."""

    @app.before_request
    def start_clock() -> None:
        g.metrics_start = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        observe(route, request.method, response.status_code, g.get("metrics_start"))
        return response

    app.register_blueprint(bp)


def observe(route: str, method: str, status: int, started: float | None) -> None:
    """Count one answered request and, if its start (``time.perf_counter()``) is known, time it."""
    REQUESTS.labels(route, method, str(status)).inc()
    if started is not None:
        LATENCY.labels(route).observe(time.perf_counter() - started)


@bp.get("/metrics")
def metrics() -> Response:
    """The Prometheus text format, for every worker of this server."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
