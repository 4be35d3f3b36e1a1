"""Gunicorn settings from the same environment as the app: ``gunicorn -c python:server.gunicorn_conf``.

Also prepares Prometheus's multiprocess directory before any worker imports the application,
and tells prometheus_client when a worker is gone, so ``/metrics`` adds up the live ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from contract.logs import logging_config
from contract.settings import Settings

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir() -> Path:
    """The directory worker processes write their metrics to (made if the environment names none)."""
    path = os.environ.get(METRICS_DIR_ENV)
    if not path:
        path = tempfile.mkdtemp(prefix="transmute-metrics-")
        os.environ[METRICS_DIR_ENV] = path
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def on_starting(server: Any) -> None:
    """Start counting from zero: samples of an earlier run would add up with ours."""
    for stale in metrics_dir().glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its gauges no longer count."""
    from prometheus_client import multiprocess  # noqa: PLC0415 (never imported by the arbiter before)

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory if it is a temporary one of ours."""
    path = metrics_dir()
    if path.name.startswith("transmute-metrics-"):
        shutil.rmtree(path, ignore_errors=True)


def options(settings: Settings) -> dict[str, Any]:
    """Gunicorn's settings for this service."""
    metrics_dir()
    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.web_concurrency or 2 * (os.cpu_count() or 1),
        # gevent: each open live-push stream (and each request waiting for a symbol to start)
        # is a greenlet, not a thread; a worker holds thousands.
        "worker_class": "server.gunicorn_worker.JsonErrorWorker",  # gevent's, answering its errors in JSON
        "worker_connections": 2000,
        # Long request lines reach Flask (which answers them in JSON) up to gunicorn's maximum.
        "limit_request_line": 8190,
        "logconfig_dict": logging_config(settings.log_level, settings.log_format),
        "keepalive": 5,
        # Several servers may share a host (tests, benchmarks); gunicornc is not used.
        "control_socket_disable": True,
        "on_starting": on_starting,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }


globals().update(options(Settings.from_env()))
