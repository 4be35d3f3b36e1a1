"""The test-control API under ``/_sim/``: inspect connections, move markets, inject faults.

Not part of Binance: tests and benchmarks use it to see what the client did and to make the
exchange misbehave on purpose.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from simulator.depth_feed import DROP, SWAP, DiffFault, is_diff
from simulator.market import book_doc
from simulator.order_book import OrderBook
from simulator.record import DUMP_LIMIT
from simulator.rest import EXCHANGE
from simulator.streams import parse_stream

logger = logging.getLogger(__name__)

FAULTS = (
    "drop", "stall", "unstall", "close", "cut", "shutdown", "slow_pong", "stale_update", "rest_429",
    "connect_429", "drop_diff", "swap_diff", "depth_delay",
)  # fmt: skip


def _has_diff(streams: dict[str, None], symbol: str) -> bool:
    """Whether a connection's streams include a diff depth stream of ``symbol``."""
    for stream in streams:
        parsed = parse_stream(stream)
        if parsed is not None and parsed[0] == symbol and is_diff(parsed[1]):
            return True
    return False


def _book_state(book: OrderBook) -> dict[str, Any]:
    """A full book's update id, levels per side, and the oldest update id its journal reaches."""
    return {"lastUpdateId": book.update_id, "levels": [len(s) for s in book.sides], "oldest": book.oldest()}


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    doc = orjson.loads(raw) if raw else {}
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return doc


async def state(request: web.Request) -> web.Response:
    """Open and recently closed connections, REST calls, rejected connection attempts."""
    exchange = request.app[EXCHANGE]
    return _json(
        {
            "sessions": [s.describe() for s in exchange.sessions.values()],
            "closed": list(exchange.closed_sessions),
            "rejected_connections": exchange.rejected_connections,
            "refused_handshakes": exchange.refused_handshakes[-200:],
            "rest_rejected": exchange.rest_rejected,
            "loop_lag_max_ms": round(exchange.loop_lag_max_s * 1000),
            "connection_attempts": exchange.limits.attempts(),
            "control_messages": exchange.control_messages,
            "rest_requests": exchange.rest_requests[-200:],
            "rest_totals": exchange.rest_totals,
            "subscribed_streams": len(exchange.subscribers),
            "depth_faults": exchange.depth_faults,
            "order_books": {symbol: _book_state(book) for symbol, book in exchange.market.books.items()},
        }
    )


async def violations(request: web.Request) -> web.Response:
    """Every time a client IP went past one of Binance's limits (simulator/limits.py): ``total``,
    counts ``by_ip`` and kind, the last ``events``, and the ``peak`` use per IP."""
    return _json(request.app[EXCHANGE].limits.report())


async def fault(request: web.Request) -> web.Response:
    """Inject a fault: ``{"fault": "stall", "session": 3}`` (no session: every connection)."""
    exchange = request.app[EXCHANGE]
    doc = await _body(request)
    name = doc.get("fault")
    if name not in FAULTS:
        return _json({"error": f"fault must be one of {', '.join(FAULTS)}"}, 400)
    sid = doc.get("session")
    sessions = list(exchange.iter_sessions(sid))
    if name == "rest_429":
        exchange.rest_429 = {
            "remaining": int(doc.get("count", 1)),
            "retry_after_s": float(doc.get("retry_after_s", 1)),
        }
    elif name == "connect_429":  # the next handshakes: {"count": 1, "retry_after_s": 5, "status": 418}
        if doc.get("status", 429) not in (429, 418):
            return _json({"error": "status must be 429 or 418"}, 400)
        exchange.connect_refusal = {
            "remaining": int(doc.get("count", 1)),
            "status": int(doc.get("status", 429)),
            "retry_after_s": float(doc.get("retry_after_s", 1)),
        }
    elif name == "depth_delay":  # {"delay_ms": 500, "count": 1} or {"delay_ms": 500, "duration_s": 5}
        duration_s = float(doc.get("duration_s", 0))
        exchange.depth_delay = {
            "remaining": int(doc.get("count", 0 if duration_s else 1)),
            "until": time.monotonic() + duration_s if duration_s else 0.0,
            "delay_ms": float(doc.get("delay_ms", 1000)),
            "stale_updates": int(doc.get("stale_updates", 0)),
        }
    elif name in (DROP, SWAP):  # the next diff depth event(s) of "symbol" on each connection
        symbol = str(doc.get("symbol", "")).upper()
        sessions = [s for s in sessions if _has_diff(s.streams, symbol)]
        for session in sessions:
            session.diff_faults[symbol] = DiffFault(name)
    elif name == "stale_update":
        symbol = doc["symbol"]
        book = exchange.market.book(symbol)
        old = type(book)(symbol, book.u - int(doc.get("back", 1)), 1, 1, 2, 1)
        exchange.publish_book(symbol, old.payload())
        return _json({"sent": old.strings(), "current": book.strings()})
    for session in sessions:
        if name == "drop":
            session.drop()
        elif name in ("stall", "unstall"):
            session.stall(name == "stall")
        elif name == "close":
            session.spawn(session.close(int(doc.get("code", 1000)), str(doc.get("reason", ""))))
        elif name == "cut":
            session.spawn(session.close(1000, "connection lifetime reached"))
        elif name == "shutdown":
            session.spawn(session.server_shutdown(float(doc.get("grace_s", 1.0))))
        elif name == "slow_pong":
            session.pong_delay_s = float(doc.get("delay_s", 1.0))
    logger.info("sim: fault %s on %d connection(s)", name, len(sessions))
    return _json({"fault": name, "sessions": [s.id for s in sessions]})


async def market(request: web.Request) -> web.Response:
    """Change the market: ``{"rate": 5, "flood": false, "quiet": ["BNBBTC"], "book_rate": 50,
    "book_levels": 6000}`` (book_levels: for the full books made from now on)."""
    exchange = request.app[EXCHANGE]
    doc = await _body(request)
    if "rate" in doc:
        exchange.config.rate = float(doc["rate"])
    if "flood" in doc:
        exchange.config.flood = bool(doc["flood"])
    if "quiet" in doc:
        exchange.set_quiet([str(s).upper() for s in doc["quiet"]])
    if "book_rate" in doc:
        exchange.config.book_rate = float(doc["book_rate"])
    if "book_levels" in doc:  # for the full books made from now on
        exchange.market.book_levels = exchange.config.book_levels = int(doc["book_levels"])
    cfg = exchange.config
    return _json({"rate": cfg.rate, "flood": cfg.flood, "quiet": sorted(exchange.quiet),
                  "book_rate": cfg.book_rate, "book_levels": cfg.book_levels})  # fmt: skip


async def make_depth(request: web.Request) -> web.Response:
    """Make a symbol's full book now (``{"symbol": "ETHBTC"}``), or also resize it now to ``levels``
    per side (``{"symbol": "ETHBTC", "levels": 300}``: each level added or removed is an update)."""
    exchange = request.app[EXCHANGE]
    doc = await _body(request)
    symbol = str(doc.get("symbol", "")).upper()
    if symbol not in exchange.catalog:
        return _json({"error": "unknown symbol"}, 404)
    market = exchange.market
    book = market.order_book(symbol)
    if "levels" in doc:
        market.resize(symbol, int(doc["levels"]))
    return _json({"symbol": symbol, **_book_state(book)})


async def book_at(request: web.Request) -> web.Response:
    """The oracle: ``GET /_sim/book?symbol=BTCUSDT&at=N&limit=L``, the full book exactly as it was
    at update id N (default: now), its top L levels (default: all), in ``/api/v3/depth``'s shape.
    404 when N is not reached yet or the symbol has no full book, 410 when the journal no longer
    goes back to N."""
    exchange = request.app[EXCHANGE]
    symbol = request.query.get("symbol", "").upper()
    book = exchange.market.books.get(symbol)
    if book is None:
        return _json({"error": f"{symbol or 'no symbol'}: no full order book (yet)"}, 404)
    try:
        at = int(request.query.get("at", book.update_id))
        limit = int(request.query["limit"]) if "limit" in request.query else None
    except ValueError:
        return _json({"error": "at and limit must be integers"}, 400)
    window = {"lastUpdateId": book.update_id, "oldest": book.oldest()}
    if at > book.update_id:
        return _json({"error": f"update id {at} not reached yet", **window}, 404)
    if at < book.oldest():
        return _json({"error": f"update id {at} is older than the journal", **window}, 410)
    bids, asks = book.at(at)
    return _json(book_doc(at, bids.top(limit), asks.top(limit)))


async def put_book(request: web.Request) -> web.Response:
    """Set a symbol's top of book and send it now; answers what was sent (with its ``u``)."""
    exchange = request.app[EXCHANGE]
    doc = await _body(request)
    symbol = str(doc["symbol"]).upper()
    if symbol not in exchange.catalog:
        return _json({"error": "unknown symbol"}, 404)
    book = exchange.market.set(
        symbol, doc["bid_price"], doc["bid_quantity"], doc["ask_price"], doc["ask_quantity"]
    )
    # Each connection writes it after the frames it has queued: when the first one does is where a
    # latency measurement starts (GET /_sim/book/<symbol>/written?u=, simulator.probes).
    on_write = exchange.probes.queued(symbol, book.u)
    receivers = exchange.publish_book(symbol, book.payload(), on_write)
    # When it was handed to the connections' queues (epoch ms).
    return _json({**book.strings(), "receivers": receivers, "published_at_ms": time.time() * 1000})


async def book_written(request: web.Request) -> web.Response:
    """``GET /_sim/book/<symbol>/written?u=N``: when the probe (``POST /_sim/book``) that made update
    ``u`` was queued and first written to a connection (epoch ms; ``written_at_ms`` null until then)."""
    exchange = request.app[EXCHANGE]
    symbol = request.match_info["symbol"].upper()
    try:
        u = int(request.query["u"])
    except (KeyError, ValueError):
        return _json({"error": "u must be an integer"}, 400)
    times = exchange.probes.times(symbol, u)
    if times is None:
        return _json({"error": f"no probe of {symbol} made update {u} (or it is forgotten)"}, 404)
    queued, written = times
    return _json({"symbol": symbol, "u": u, "queued_at_ms": queued, "written_at_ms": written})


async def get_book(request: web.Request) -> web.Response:
    """The current top of book of a symbol (what the stream last sent, and REST answers)."""
    exchange = request.app[EXCHANGE]
    symbol = request.match_info["symbol"].upper()
    if symbol not in exchange.catalog:
        return _json({"error": "unknown symbol"}, 404)
    return _json(exchange.market.book(symbol).strings())


async def listing(request: web.Request) -> web.Response:
    """List a new symbol or change a status: ``{"base": "NEW", "quote": "USDT", "status": "TRADING"}``."""
    exchange = request.app[EXCHANGE]
    doc = await _body(request)
    entry = exchange.catalog.list_symbol(
        str(doc["base"]), str(doc["quote"]), str(doc.get("status", "TRADING"))
    )
    exchange.set_quiet(sorted(exchange.quiet))  # the active set may have changed
    return _json({"symbol": entry["symbol"], "status": entry["status"]})


async def recorded(request: web.Request) -> web.Response:
    """What was published after cursor ``since`` (``?since=0&limit=50000``); 409 unless ``--record``."""
    recorder = request.app[EXCHANGE].recorder
    if recorder is None:
        return _json({"error": "not recording: start the simulator with --record"}, 409)
    try:
        since, limit = int(request.query.get("since", "0")), int(request.query.get("limit", DUMP_LIMIT))
    except ValueError:
        return _json({"error": "since and limit must be integers"}, 400)
    return web.Response(body=recorder.dump(since, limit), content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Mount the control API."""
    app.router.add_get("/_sim/state", state)
    app.router.add_get("/_sim/violations", violations)
    app.router.add_post("/_sim/fault", fault)
    app.router.add_post("/_sim/market", market)
    app.router.add_post("/_sim/book", put_book)
    app.router.add_get("/_sim/book/{symbol}", get_book)
    app.router.add_get("/_sim/book/{symbol}/written", book_written)
    app.router.add_get("/_sim/book", book_at)
    app.router.add_post("/_sim/depth", make_depth)
    app.router.add_post("/_sim/listing", listing)
    app.router.add_get("/_sim/record", recorded)
