"""The HTTP side: a Flask app that answers from Redis. Gunicorn runs ``server:create_app()``.

Importing the package loads nothing else, so gunicorn's configuration (server.gunicorn_conf)
can prepare the environment, such as Prometheus's multiprocess directory, before the
application and its libraries are imported in the workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis
    from flask import Flask


def create_app(overrides: Mapping[str, Any] | None = None, client: redis.Redis | None = None) -> Flask:
    """The application: defaults, then the environment, then ``overrides`` (tests)."""
    from server.app import build_app  # noqa: PLC0415 (deliberately late: see the module docstring)

    return build_app(overrides, client)
