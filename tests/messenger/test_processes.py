"""``python -m messenger --processes N``: what each member process is started with."""

from __future__ import annotations

from messenger.__main__ import _member_argv, cores, parse_args


def test_each_member_runs_the_same_symbols_and_kinds_as_one_member_however_processes_was_spelled() -> None:
    for argv in (["--processes", "3"], ["--proc", "3"], ["--processes=3"]):
        args = parse_args(["btcusdt", "ethbtc", "--all", "--streams", "trade", *argv])
        assert args.processes == 3
        assert _member_argv(args) == ["btcusdt", "ethbtc", "--all", "--streams", "trade", "--processes", "1"]
        assert parse_args(_member_argv(args)).processes == 1


def test_one_per_core_is_at_least_one() -> None:
    assert cores() >= 1
