"""``python -m simulator``: a local Binance spot stand-in (WebSocket streams and REST, one port)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from aiohttp import web

from simulator.app import create_app
from simulator.config import RECORDING_FIXTURE, SimConfig


def parse_args(argv: list[str] | None = None) -> SimConfig:
    """Command line (each option also from a ``SIM_*`` environment variable) into a SimConfig."""
    d = SimConfig()
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    p.add_argument("--host", default=env("SIM_HOST", d.host))
    p.add_argument("--port", type=int, default=int(env("SIM_PORT", d.port)))
    p.add_argument(
        "--exchange-info",
        type=Path,
        default=Path(env("SIM_EXCHANGE_INFO", d.exchange_info)),
        help="exchangeInfo JSON to serve (default: the recorded 1,695-symbol one)",
    )
    p.add_argument(
        "--extra-symbols",
        type=int,
        default=int(env("SIM_EXTRA_SYMBOLS", d.extra_symbols)),
        help="add N synthetic TRADING symbols (SIM0000USDT, ...)",
    )
    p.add_argument("--seed", type=int, default=int(env("SIM_SEED", d.seed)))
    p.add_argument(
        "--rate",
        type=float,
        default=float(env("SIM_RATE", d.rate)),
        help="updates per second per subscribed bookTicker stream",
    )
    p.add_argument(
        "--flood",
        action="store_true",
        default=env("SIM_FLOOD") == "1",
        help="send updates as fast as clients read them",
    )
    p.add_argument(
        "--book-levels",
        type=int,
        default=int(env("SIM_BOOK_LEVELS", d.book_levels)),
        help="levels per side of a full order book (made when its diff depth or deep book is asked for)",
    )
    p.add_argument(
        "--book-rate",
        type=float,
        default=float(env("SIM_BOOK_RATE", d.book_rate)),
        help="extra limit orders and cancels per second per full order book",
    )
    p.add_argument(
        "--book-journal",
        type=int,
        default=int(env("SIM_BOOK_JOURNAL", d.book_journal)),
        help="changes per full order book kept for GET /_sim/book?at=",
    )
    p.add_argument(
        "--replay",
        nargs="?",
        const=RECORDING_FIXTURE,
        type=Path,
        default=None,
        help="replay a recorded combined stream (default: the bundled recording)",
    )
    p.add_argument("--replay-speed", type=float, default=d.replay_speed, help="0: as fast as possible")
    p.add_argument(
        "--record",
        action="store_true",
        default=env("SIM_RECORD") == "1",
        help="keep a bounded log of every value published, read at GET /_sim/record (for tests)",
    )
    p.add_argument(
        "--ping-interval", type=float, default=float(env("SIM_PING_INTERVAL_S", d.ping_interval_s))
    )
    p.add_argument("--pong-timeout", type=float, default=float(env("SIM_PONG_TIMEOUT_S", d.pong_timeout_s)))
    p.add_argument("--max-messages-per-s", type=int, default=d.max_messages_per_s)
    p.add_argument("--max-streams", type=int, default=d.max_streams)
    p.add_argument("--max-url-length", type=int, default=d.max_url_length)
    p.add_argument(
        "--max-connection-age",
        type=float,
        default=float(env("SIM_MAX_CONNECTION_AGE_S", d.max_connection_age_s)),
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections_per_window,
        help="connection attempts allowed per window (Binance: 300 per 5 minutes)",
    )
    p.add_argument("--connection-window", type=float, default=d.connection_window_s)
    p.add_argument(
        "--rest-weight-limit",
        type=int,
        default=d.rest_weight_limit,
        help="REST request weight allowed per minute per IP (Binance: 6,000)",
    )
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    return SimConfig(
        host=a.host, port=a.port, exchange_info=a.exchange_info, extra_symbols=a.extra_symbols,
        seed=a.seed, rate=a.rate, flood=a.flood, replay=a.replay, replay_speed=a.replay_speed,
        record=a.record, book_levels=a.book_levels, book_rate=a.book_rate, book_journal=a.book_journal,
        ping_interval_s=a.ping_interval, pong_timeout_s=a.pong_timeout,
        max_messages_per_s=a.max_messages_per_s, max_streams=a.max_streams,
        max_url_length=a.max_url_length, max_connection_age_s=a.max_connection_age,
        max_connections_per_window=a.max_connections, connection_window_s=a.connection_window,
        rest_weight_limit=a.rest_weight_limit,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run the simulator until interrupted."""
    config = parse_args(argv)
    app = create_app(config)
    logging.getLogger("simulator").info("sim: listening on %s:%d", config.host, config.port)
    web.run_app(app, host=config.host, port=config.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
