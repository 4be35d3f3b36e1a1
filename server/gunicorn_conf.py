"""Gunicorn settings from the same environment as the app: ``gunicorn -c python:server.gunicorn_conf``.

Also prepares Prometheus's multiprocess directory before any worker imports the application,
and tells prometheus_client when a worker is gone, so ``/metrics`` adds up the live ones.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

from contract.logs import logging_config
from contract.settings import Settings

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Connections a worker holds at once: under gevent each is a greenlet of a few KiB, so many more
# than a crowd of slow clients can occupy for the few seconds each is allowed (a slow header has
# the keepalive, a slow body server/body_deadline.py's deadline), and still room for everyone else.
WORKER_CONNECTIONS = 10_000
# Descriptors a worker needs besides its clients' sockets: Redis, metrics files, logs.
SPARE_FILES = 256


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


class AccessLogger(Logger):  # type: ignore[misc]
    """Gunicorn's logger, which builds every request's access line even when the access log is
    off (ours is: see contract/logs.py); this one builds it only when it is written."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


def open_files_limit(wanted: int) -> int:
    """Raise this process's open-file limit (its workers inherit it) toward ``wanted``, as far as
    the hard limit allows; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target <= soft:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def options(settings: Settings) -> dict[str, Any]:
    """Gunicorn's settings for this service."""
    metrics_dir()
    files = open_files_limit(WORKER_CONNECTIONS + SPARE_FILES)
    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.web_concurrency or 2 * (os.cpu_count() or 1),
        # gevent: each open live-push stream (and each request waiting for a symbol to start)
        # is a greenlet, not a thread; a worker holds thousands. Gunicorn's gevent worker, but
        # accepting waiting connections in batches and answering its own errors in JSON (see
        # server/gevent_worker.py).
        "worker_class": "server.gevent_worker.GeventWorker",
        # A worker never accepts more connections than it has descriptors for.
        "worker_connections": max(1, min(WORKER_CONNECTIONS, files - SPARE_FILES)),
        # A burst of new connections waits in the kernel's queue (up to net.core.somaxconn)
        # rather than having its handshakes dropped, which costs each client a second or more.
        "backlog": 4096,
        # Long request lines reach Flask (which answers them in JSON) up to gunicorn's maximum.
        "limit_request_line": 8190,
        "logconfig_dict": logging_config(settings.log_level, settings.log_format),
        "logger_class": AccessLogger,
        "keepalive": 5,
        # Several servers may share a host (tests, benchmarks); gunicornc is not used.
        "control_socket_disable": True,
        "on_starting": on_starting,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }


globals().update(options(Settings.from_env()))
