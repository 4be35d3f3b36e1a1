"""Health for load balancers: ``GET /healthz`` (the process is up) and ``GET /readyz`` (it can serve)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from flask import Blueprint

from contract.keys import HEARTBEAT_KEY
from server.errors import store_down
from server.views import store

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    """200 while the process answers; touches nothing else."""
    return {"status": "ok"}


def not_ready(beat: dict[str, Any]) -> str | None:
    """Why a messenger with this heartbeat cannot serve, or None if it can: it needs the symbol list
    and, while it has streams to carry, a live connection to Binance."""
    errors = beat.get("binance_errors") or []
    unreachable = f" (Binance unreachable: {'; '.join(errors)})" if errors else ""
    if beat.get("streams_wanted") and not beat.get("live_connections"):
        return f"the messenger has no live connection to Binance{unreachable}"
    if beat.get("catalog_symbols") == 0:
        return f"the messenger has no symbol list from Binance yet{unreachable}"
    return None


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """200 while Redis answers, the messenger's heartbeat is fresh and the messenger is connected to
    Binance with its symbol list; 503 with the reason otherwise.

    Also says how much of what the messenger streams is fresh (servable) right now.
    """
    try:
        raw = store().client.get(HEARTBEAT_KEY)
    except redis.RedisError as exc:
        store_down("/readyz", exc)
        return {"status": "unavailable", "reason": "redis does not answer"}, 503
    if raw is None:
        return {"status": "unavailable", "reason": "no fresh messenger heartbeat"}, 503
    beat = orjson.loads(raw)
    tracked, fresh = beat.get("tracked", 0), beat.get("fresh", 0)
    body = {
        "status": "ready",
        "messenger": beat,
        "heartbeat_age_ms": max(0, int(time.time() * 1000) - beat.get("ts", 0)),
        "fresh_share": round(fresh / tracked, 4) if tracked else None,
    }
    reason = not_ready(beat)
    if reason is not None:
        return {**body, "status": "unavailable", "reason": reason}, 503
    return body, 200
