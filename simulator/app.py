"""The simulator's aiohttp application: WebSocket streams, REST, and the control API on one port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from simulator import control, rest, rest_history
from simulator.config import SimConfig
from simulator.exchange import LOCAL, Exchange
from simulator.rest import EXCHANGE
from simulator.session import Session
from simulator.streams import parse_stream

logger = logging.getLogger(__name__)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    """``/ws``, ``/ws/<stream>[/<stream>...]`` (raw) and ``/stream?streams=a/b`` (combined)."""
    exchange = request.app[EXCHANGE]
    config = exchange.config
    if len(request.raw_path) > config.max_url_length:
        return web.Response(status=414, text="URI Too Long")
    if request.path.startswith("/stream"):
        combined = True
        # A raw "+" (kline_1d@+08:00) reads as a space in a query string: it can only mean "+".
        names = [n.replace(" ", "+") for n in request.query.get("streams", "").split("/") if n]
    else:
        combined = False
        names = [n for n in request.match_info.get("streams", "").split("/") if n]
    if not all(parse_stream(n) for n in names):
        return rest.binance_error(400, 2, "Invalid request: invalid stream")
    if len(names) > config.max_streams:
        return rest.binance_error(400, 4, "Too many subscriptions")
    ip = request.remote or LOCAL
    refusal = exchange.refuse_handshake(ip)
    if refusal is not None:  # Binance's answer to an IP over its limits (429) or banned (418)
        status, retry_after = refusal
        msg = "Too many requests." if status == 429 else "IP banned; retry after Retry-After."
        return rest.binance_error(status, -1003, msg, headers={"Retry-After": retry_after})
    if not exchange.admit_connection(ip):
        return rest.binance_error(429, -1003, "Too many connection attempts.")
    ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    session = Session(exchange, request, ws, combined)
    for name in dict.fromkeys(names):
        exchange.subscribe(session, name)
    logger.info("sim conn %d: open %s with %d streams", session.id, request.path, len(names))
    await session.run()
    return ws


def create_app(config: SimConfig) -> web.Application:
    """The simulator as an aiohttp application (its market task runs while the app runs)."""
    # Long connect URLs must reach the handler, which refuses them the way Binance does.
    app = web.Application(handler_args={"max_line_size": 1 << 16, "max_field_size": 1 << 16})
    app[EXCHANGE] = Exchange(config)
    app.router.add_get("/ws", stream_handler)
    app.router.add_get("/ws/{streams:.+}", stream_handler)
    app.router.add_get("/stream", stream_handler)
    rest.add_routes(app)
    rest_history.add_routes(app)
    control.add_routes(app)
    app.cleanup_ctx.append(_background)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    exchange = app[EXCHANGE]
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(exchange.run_market()), loop.create_task(exchange.run_periodic())]
    if exchange.config.replay is not None:
        tasks.append(loop.create_task(exchange.run_replay(exchange.config.replay)))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for session in list(exchange.sessions.values()):
        await session.close(1001, "simulator stopping")
