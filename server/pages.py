"""Pages for people and the machine-readable description: ``/``, ``/status.json``, ``/docs``,
``/openapi.json``. Nothing is loaded from outside: the pages carry their own style and script."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, render_template

from contract.kinds import key_kind
from contract.members import heartbeats
from server import docs as guide
from server import openapi
from server.books import KIND as BOOK_KIND
from server.errors import STORE_DOWN, ApiError, store_down
from server.store import StoreUnavailable
from server.views import RETRY, books, store

bp = Blueprint("pages", __name__)
BOOK_TICKER = key_kind("bookTicker")


@bp.get("/")
def status_page() -> str:
    """The status page: streamed symbols with bid/ask, age and connection, live."""
    return render_template("status.html")


@bp.get("/status.json")
def status() -> dict[str, Any]:
    """What the status page shows: the members' heartbeats (``messenger``: the first one's), every
    streamed bookTicker, and every order book kept (its depth and age, or why it cannot be
    served)."""
    snapshots = store()
    try:
        _, beats = heartbeats(snapshots.client)
        symbols = snapshots.streamed(BOOK_TICKER)
        # Watching the status page is no one's use of each symbol: it keeps none streamed.
        records = snapshots.snapshots(BOOK_TICKER, symbols, touch=False) if symbols else []
        book_rows = books().status(snapshots.streamed(BOOK_KIND))
    except (StoreUnavailable, redis.RedisError) as exc:
        store_down("/status.json", exc)
        raise ApiError(503, STORE_DOWN, RETRY) from None
    now = int(time.time() * 1000)
    rows = []
    for symbol, record in zip(symbols, records, strict=True):
        row: dict[str, Any] = {"symbol": symbol, "fresh": record is not None}
        if record is not None:
            row.update(
                {
                    k: record.get(k)
                    for k in ("bid_price", "bid_quantity", "ask_price", "ask_quantity", "connection")
                }
            )
            row["age_ms"] = max(0, now - record["as_of"])
        rows.append(row)
    return {
        "messenger": beats[0] if beats else None,
        "members": beats,
        "symbols": rows,
        "books": book_rows,
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3 description."""
    return Response(orjson.dumps(openapi.document()), mimetype="application/json")


@bp.get("/docs")
def docs() -> str:
    """The OpenAPI description as a page: contents, errors, operations, response shapes."""
    doc = openapi.document()
    return render_template("docs.html", doc=doc, groups=guide.groups(doc), shapes=guide.shapes(doc))
