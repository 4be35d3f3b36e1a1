"""``python -m messenger [SYMBOL ...]``: stream Binance bookTickers into Redis."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from contract.kinds import resolve_kind
from contract.logs import configure_logging
from contract.settings import MAX_PROCESSES, Settings, SettingsError
from contract.symbols import InvalidSymbol, normalize_symbol
from messenger.binance import KINDS, StreamKind
from messenger.processes import run_members
from messenger.signals import StopFlags, captured

logger = logging.getLogger("messenger")
GIL_SWITCH_INTERVAL_S = 0.0005
# The cyclic garbage collector's youngest generation is collected once this many more container
# objects were made than freed (CPython's default: 700). A writer's batch makes and frees a few
# thousand at once (records, RESP parts), so the default collected about 20 times a second in
# a 20,000 frames/s flood, and the objects alive at that moment (each symbol's latest value,
# replaced a tenth of a second later) were promoted, until a full collection of the whole heap
# every few seconds paused every thread for tens of milliseconds: the freshness p99. Above a
# batch's transient objects, hardly a collection runs in the steady state (one in 30 s measured).
GC_GEN0_THRESHOLD = 20_000


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
    parser.add_argument(
        "--streams", default="bookTicker", metavar="KIND,...",
        help=f"kinds to keep streamed for those symbols (default bookTicker): {', '.join(KINDS)}",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, default=None, metavar="N",
        help="run N members (one process each) on this machine; 0: one per CPU core "
        "(default: PROCESSES, else 1)",
    )  # fmt: skip
    return parser.parse_args(argv)


def parse_kinds(text: str) -> list[StreamKind]:
    """``bookTicker,trade,kline_1m`` (any case but a kline's interval) -> the kinds."""
    out = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        name = resolve_kind(raw)
        if name is None:
            raise ValueError(f"--streams: {raw!r} is not a stream kind; kinds: {', '.join(KINDS)}")
        out.append(KINDS[name])
    if not out:
        raise ValueError("--streams: name at least one kind")
    return list(dict.fromkeys(out))


def cores() -> int:
    """The CPU cores this process may run on (a container's share where the OS says), at least 1."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _member_argv(args: argparse.Namespace) -> list[str]:
    """What each member process runs: the same symbols and kinds, as one member."""
    everything = ["--all"] if args.all_symbols else []
    return [*args.symbols, *everything, "--streams", args.streams, "--processes", "1"]


def main(argv: list[str] | None = None) -> int:
    """Run the messenger; returns the exit status.

    SIGTERM and SIGINT are caught first: a stop that comes while the process is still starting
    (``docker stop`` just after ``docker start``, a launcher stopping its members) is kept and
    honoured, not lost. As a container's PID 1 without handlers, a SIGTERM is simply discarded
    (PID 1 has no default action), so the container ran on until docker SIGKILLed it 10 s later.
    """
    with captured(StopFlags()) as flags:
        return _main(argv, flags)


def _main(argv: list[str] | None, flags: StopFlags) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
        symbols = list(dict.fromkeys(normalize_symbol(s) for s in args.symbols))
        kinds = parse_kinds(args.streams)
    except (SettingsError, InvalidSymbol, ValueError) as exc:
        print(f"messenger: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    processes = settings.processes if args.processes is None else args.processes
    if processes == 0:
        processes = cores()
    if not 0 <= processes <= MAX_PROCESSES:
        print(f"messenger: --processes must be 0 to {MAX_PROCESSES}", file=sys.stderr)
        return 2
    if processes > 1:
        return run_members(processes, _member_argv(args), settings.metrics_port, flags)
    if flags.stop.is_set():
        return 0  # stopped before it began: nothing to undo
    # Imported here: a launcher does without the messenger's modules, so it starts (and takes a
    # stop) sooner, and holds none of them.
    from messenger.service import Messenger  # noqa: PLC0415
    from messenger.worker import PartDied  # noqa: PLC0415

    # Reader threads are busy under load; a writer woken with a batch ready should not wait the
    # default 5 ms for the GIL (that was most of the frame-to-Redis p99 at 20,000 frames/s).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    try:
        Messenger(settings).run(symbols, args.all_symbols, flags, kinds)
    except PartDied as exc:
        logger.critical("messenger: %s; stopped (exit status 1)", exc)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are in place: nothing to clean up
        sys.exit(130)
