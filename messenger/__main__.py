"""``python -m messenger [SYMBOL ...]``: stream Binance bookTickers into Redis."""

from __future__ import annotations

import argparse
import logging
import sys

from contract.logs import configure_logging
from contract.settings import Settings, SettingsError
from contract.symbols import InvalidSymbol, normalize_symbol
from messenger.service import Messenger
from messenger.signals import StopFlags, captured

logger = logging.getLogger("messenger")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m messenger",
        description="Hold Binance WebSocket streams and keep every symbol's latest value in Redis. "
        "Settings come from the environment (see .env.example).",
    )
    parser.add_argument(
        "symbols", nargs="*", default=["btcusdt"], metavar="SYMBOL",
        help="symbols to keep streaming, any spelling (BTC_USDT, btcusdt); default: btcusdt. "
        "Any other trading symbol is streamed on demand, while users ask for it.",
    )  # fmt: skip
    parser.add_argument(
        "--all", action="store_true", dest="all_symbols",
        help="keep every trading symbol streamed (sharded over as many connections as needed)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the messenger; returns the exit status."""
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
        symbols = list(dict.fromkeys(normalize_symbol(s) for s in args.symbols))
    except (SettingsError, InvalidSymbol) as exc:
        print(f"messenger: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    messenger = Messenger(settings)
    with captured(StopFlags()) as flags:
        messenger.run(symbols, args.all_symbols, flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
