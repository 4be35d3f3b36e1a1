"""``GET /sapi/v1/system/status``: whether Transmute is connected to Binance, in Binance's shape.

Binance answers ``{"status": 0, "msg": "normal"}``, or ``{"status": 1, "msg": "system maintenance"}``,
always with HTTP 200. Here "normal" means a messenger's heartbeat (fresh: it lapses with the
values, ``SNAPSHOT_TTL_MS`` after the messenger dies) reports a live connection to Binance; no
heartbeat, no live connection, or Redis not answering is "system maintenance": nothing current
can be served then.
"""

from __future__ import annotations

import redis
from flask import Blueprint, Response

from contract.members import heartbeats
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
        _, beats = heartbeats(store().client)
    except redis.RedisError as exc:
        store_down("/sapi/v1/system/status", exc)
        return json_body(MAINTENANCE)
    live = [beat.get("live_connections") for beat in beats]
    return json_body(NORMAL if any(isinstance(n, int) and n > 0 for n in live) else MAINTENANCE)
