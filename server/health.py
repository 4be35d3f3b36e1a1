"""Health for load balancers: ``GET /healthz`` (the process is up) and ``GET /readyz`` (it can serve)."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint

from contract.members import heartbeats
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


def service_not_ready(members: list[str], beats: list[dict[str, Any]]) -> str | None:
    """Why the members together cannot serve every wanted stream, or None if they can.

    Each wanted stream has live owners carrying it when every live member is heard from, those
    that are not leaving spread the streams over the same members (they all see the same ones),
    and each of them is ready on its own (``not_ready``).
    """
    heard = {beat["member"] for beat in beats}
    silent = [m for m in members if m not in heard]
    if silent:
        return f"member {', '.join(silent)} is not heard from; its streams move to the others"
    owning = [beat for beat in beats if not beat.get("leaving")]
    view = sorted(beat["member"] for beat in owning)
    for beat in owning:
        reason = not_ready(beat)
        if reason is not None:
            # The reason first, as with one messenger: what is wrong matters more than where (and
            # than a change of members, which passes on its own).
            return reason if len(owning) == 1 else f"{reason} (member {beat['member']} of {len(owning)})"
    for beat in owning:
        if "view" in beat and sorted(beat["view"]) != view:
            return f"member {beat['member']} is still taking over streams (members changed)"
    return None


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """200 while Redis answers, every live messenger (member) has a fresh heartbeat, is connected
    to Binance with its symbol list, and all spread the streams alike; 503 with the reason otherwise.

    Also says how much of what the members stream is fresh (servable) right now; ``messenger`` is
    the first member's heartbeat, ``members`` every one's.
    """
    try:
        members, beats = heartbeats(store().client)
    except redis.RedisError as exc:
        store_down("/readyz", exc)
        return {"status": "unavailable", "reason": "redis does not answer"}, 503
    if not beats:
        return {"status": "unavailable", "reason": "no fresh messenger heartbeat"}, 503
    tracked = sum(beat.get("tracked", 0) for beat in beats)
    fresh = sum(beat.get("fresh", 0) for beat in beats)
    now = int(time.time() * 1000)
    body = {
        "status": "ready",
        "messenger": beats[0],
        "members": beats,
        "heartbeat_age_ms": max(max(0, now - beat.get("ts", 0)) for beat in beats),
        "fresh_share": round(fresh / tracked, 4) if tracked else None,
    }
    reason = service_not_ready(members, beats)
    if reason is not None:
        return {**body, "status": "unavailable", "reason": reason}, 503
    return body, 200
