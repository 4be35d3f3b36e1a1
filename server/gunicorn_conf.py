"""Gunicorn settings from the same environment as the app: ``gunicorn -c python:server.gunicorn_conf``."""

from __future__ import annotations

import os
from typing import Any

from contract.logs import logging_config
from contract.settings import Settings


def options(settings: Settings) -> dict[str, Any]:
    """Gunicorn's settings for this service."""
    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.web_concurrency or 2 * (os.cpu_count() or 1),
        # gevent: each open live-push stream (and each request waiting for a symbol to start)
        # is a greenlet, not a thread; a worker holds thousands.
        "worker_class": "gevent",
        "worker_connections": 2000,
        # Long request lines reach Flask (which answers them in JSON) up to gunicorn's maximum.
        "limit_request_line": 8190,
        "logconfig_dict": logging_config(settings.log_level, settings.log_format),
        "keepalive": 5,
        # Several servers may share a host (tests, benchmarks); gunicornc is not used.
        "control_socket_disable": True,
    }


globals().update(options(Settings.from_env()))
