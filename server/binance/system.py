"""``GET /sapi/v1/system/status``: whether Transmute is connected to Binance, in Binance's shape.

Binance answers ``{"status": 0, "msg": "normal"}``, or ``{"status": 1, "msg": "system maintenance"}``,
always with HTTP 200. Here "normal" means the messenger's heartbeat (fresh: it lapses with the
values, ``SNAPSHOT_TTL_MS`` after the messenger dies) reports a live connection to Binance; no
heartbeat, no live connection, or Redis not answering is "system maintenance": nothing current
can be served then.
"""

from __future__ import annotations

import orjson
import redis
from flask import Blueprint, Response

from contract.keys import HEARTBEAT_KEY
from server.binance.common import json_body
from server.errors import store_down
from server.views import store

bp = Blueprint("binance_system", __name__, url_prefix="/sapi/v1")

NORMAL = {"status": 0, "msg": "normal"}
MAINTENANCE = {"status": 1, "msg": "system maintenance"}


@bp.get("/system/status")
def system_status() -> Response:
    """``{"status": 0, "msg": "normal"}`` while the messenger has a live connection to Binance."""
    try:
        raw = store().client.get(HEARTBEAT_KEY)
    except redis.RedisError as exc:
        store_down("/sapi/v1/system/status", exc)
        return json_body(MAINTENANCE)
    try:
        beat = orjson.loads(raw) if isinstance(raw, bytes) else None
    except orjson.JSONDecodeError:
        beat = None
    live = beat.get("live_connections") if isinstance(beat, dict) else None
    return json_body(NORMAL if isinstance(live, int) and live > 0 else MAINTENANCE)
