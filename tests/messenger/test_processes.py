"""``python -m messenger --processes N``: what each member process is started with."""

from __future__ import annotations

from typing import Any

import pytest

from messenger.__main__ import _member_argv, cores, parse_args


def test_each_member_runs_the_same_symbols_and_kinds_as_one_member_however_processes_was_spelled() -> None:
    for argv in (["--processes", "3"], ["--proc", "3"], ["--processes=3"]):
        args = parse_args(["btcusdt", "ethbtc", "--all", "--streams", "trade", *argv])
        assert args.processes == 3
        assert _member_argv(args) == ["btcusdt", "ethbtc", "--all", "--streams", "trade", "--processes", "1"]
        assert parse_args(_member_argv(args)).processes == 1


def test_one_per_core_is_at_least_one() -> None:
    assert cores() >= 1


def test_a_member_killed_by_a_signal_makes_the_launcher_exit_as_a_shell_reports_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """a member SIGKILLed, then the launcher stopped, made it exit with sys.exit(-9),
    i.e. status 247, which scripts/run-local printed as "kill: 119: invalid signal specification"
    and "the messenger exited (killed by SIG)". A status must be 0..255; a signal death 128 + N."""
    import signal
    import subprocess

    from messenger import processes

    real_popen = subprocess.Popen

    def killed_at_once(args: object, **kwargs: Any) -> subprocess.Popen[bytes]:
        return real_popen(["sh", "-c", "kill -9 $$"], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", killed_at_once)
    assert processes.run_members(1, [], 0) == 128 + signal.SIGKILL


def test_processes_on_the_command_line_is_bounded_as_the_setting_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """PROCESSES=100000 is refused ("above the maximum 256"), but
    ``python -m messenger --processes 100000`` goes straight to run_members and starts 100,000
    member processes (only a negative number is refused)."""
    import messenger.__main__ as main_module

    started: list[int] = []

    def run_members(count: int, argv: object, port: int) -> int:
        started.append(count)
        return 0

    monkeypatch.setattr(main_module, "run_members", run_members)
    monkeypatch.setenv("METRICS_PORT", "0")
    assert main_module.main(["btcusdt", "--processes", "100000"]) == 2
    assert started == []
