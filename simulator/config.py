"""The simulator's knobs: Binance's documented limits by default, all shortenable for tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
EXCHANGE_INFO_FIXTURE = DATA_DIR / "exchangeInfo-spot-2021-10-12.json"
RECORDING_FIXTURE = DATA_DIR / "spot-combined-stream-2021-10-12.log"


@dataclass
class SimConfig:
    """How the simulated exchange behaves. Mutable: tests change market knobs at run time."""

    host: str = "127.0.0.1"
    port: int = 9443
    exchange_info: Path = EXCHANGE_INFO_FIXTURE
    extra_symbols: int = 0
    seed: int = 1
    # Market data: updates per second per subscribed stream, or as fast as clients read.
    rate: float = 1.0
    flood: bool = False
    replay: Path | None = None
    replay_speed: float = 1.0
    # Full order books (made for the symbols whose deep book someone asks for): levels per side,
    # extra limit orders and cancels per second per book (on top of ``rate``'s steps), and how
    # many changes per book GET /_sim/book?at= can go back.
    book_levels: int = 6000
    book_rate: float = 50.0
    book_journal: int = 200_000
    # Keep a log of every value published, for a test's oracle (GET /_sim/record).
    record: bool = False
    # Binance's limits (shared/binance-protocol.md section 1.2).
    ping_interval_s: float = 20.0
    pong_timeout_s: float = 60.0
    max_messages_per_s: int = 5
    max_streams: int = 1024
    max_url_length: int = 8000
    max_connection_age_s: float = 24 * 3600.0
    max_connections_per_window: int = 300
    connection_window_s: float = 300.0
    rest_weight_limit: int = 6000
    # Frames queued for a client that does not read before it is cut off as too slow.
    outbox_limit: int = 200_000
