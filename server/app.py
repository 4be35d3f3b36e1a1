"""The application factory: settings, Redis, the blueprints and the error handlers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import redis
from flask import Flask
from flask.json.provider import JSONProvider

from contract.settings import Settings
from server import binance, errors, health, metrics, pages, push, views
from server.binance import system
from server.body_deadline import BodyDeadline
from server.books import BookReader
from server.candles import CandleStore
from server.fast import FastSnapshots
from server.fast_depth import FastDepth
from server.fast_klines import FastKlines
from server.hub import Hub
from server.store import SnapshotStore, redis_client

# Bodies are tiny JSON documents; anything larger is refused with a JSON 413.
MAX_BODY_BYTES = 16 * 1024


class OrjsonProvider(JSONProvider):
    """Flask's JSON through orjson: faster, and it never turns a price string into a float."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def build_app(overrides: Mapping[str, Any] | None = None, client: redis.Redis | None = None) -> Flask:
    """The application: defaults, then the environment, then ``overrides`` (tests)."""
    settings = Settings.from_env(**dict(overrides or {}))
    app = Flask(__name__)
    # Never in debug mode, whatever the environment says (Flask reads FLASK_DEBUG by itself).
    app.debug = False
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["transmute.settings"] = settings
    client = client or redis_client(settings)
    store = app.extensions["transmute.store"] = SnapshotStore(client)
    candles = app.extensions["transmute.candles"] = CandleStore(client, store)
    books = app.extensions["transmute.books"] = BookReader(store, settings.demand_wait_ms / 1000)
    app.extensions["transmute.hub"] = Hub(client)
    errors.register(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(binance.bp)
    app.register_blueprint(system.bp)
    app.register_blueprint(push.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(pages.bp)
    metrics.register(app)
    # The commonest requests, answered before Flask when they can be (see server/fast.py,
    # server/fast_klines.py and server/fast_depth.py); and
    # before everything, every body read whole within a deadline (see server/body_deadline.py).
    fast = FastSnapshots(FastKlines(FastDepth(app.wsgi_app, books), candles), store)
    deadline_s = settings.body_timeout_ms / 1000
    app.wsgi_app = BodyDeadline(fast, MAX_BODY_BYTES, deadline_s)  # type: ignore[method-assign]
    return app
