"""``python -m messenger --processes N``: what each member process is started with."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from messenger import processes
from messenger.__main__ import _member_argv, cores, parse_args
from messenger.signals import StopFlags


def test_each_member_runs_the_same_symbols_and_kinds_as_one_member_however_processes_was_spelled() -> None:
    for argv in (["--processes", "3"], ["--proc", "3"], ["--processes=3"]):
        args = parse_args(["btcusdt", "ethbtc", "--all", "--streams", "trade", *argv])
        assert args.processes == 3
        assert _member_argv(args) == ["btcusdt", "ethbtc", "--all", "--streams", "trade", "--processes", "1"]
        assert parse_args(_member_argv(args)).processes == 1


def test_one_per_core_is_at_least_one() -> None:
    assert cores() >= 1


def members_running(monkeypatch: pytest.MonkeyPatch, *scripts: str) -> list[subprocess.Popen[bytes]]:
    """Member processes are these shell scripts, in turn (the last one again after that); returns
    the processes started, as they are started."""
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(args: object, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real_popen(["sh", "-c", scripts[min(len(started), len(scripts) - 1)]], **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    return started


def stop_when(check: Callable[[], bool], flags: StopFlags) -> threading.Thread:
    """Ask for a stop (as the SIGTERM handler does) once ``check`` holds (within 10 s)."""

    def watch() -> None:
        deadline = time.monotonic() + 10
        while not check() and time.monotonic() < deadline:
            time.sleep(0.01)
        flags.stop.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# A member that runs until its SIGTERM, then leaves cleanly.
MEMBER = "trap 'exit 0' TERM; while :; do sleep 0.02; done"


def test_a_member_killed_by_a_signal_makes_the_launcher_exit_as_a_shell_reports_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """a member SIGKILLed, then the launcher stopped, made it exit with sys.exit(-9),
    i.e. status 247, which scripts/run-local printed as "kill: 119: invalid signal specification"
    and "the messenger exited (killed by SIG)". A status must be 0..255; a signal death 128 + N."""
    # The stop comes once the member's trap is set (before, the SIGTERM itself would end it).
    members_running(monkeypatch, f"trap 'kill -9 $$' TERM; touch {tmp_path}/$$; while :; do sleep 0.02; done")
    flags = StopFlags()
    stop_when(lambda: any(tmp_path.iterdir()), flags)
    assert processes.run_members(1, [], 0, flags) == 128 + signal.SIGKILL


def test_a_member_that_ends_on_its_own_is_started_again_and_the_stop_is_clean(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A member killed (here: status 3 at once) was not started again: the launcher, a container's
    PID 1, stayed up with one member fewer (unhealthy if it was the first: /healthz is its port),
    and Docker's restart policy, which sees only PID 1, never acted."""
    monkeypatch.setattr(processes, "RESTART_S", 0.05)
    member = f"trap 'exit 0' TERM; touch {tmp_path}/$$; while :; do sleep 0.02; done"
    started = members_running(monkeypatch, "exit 3", member)
    flags = StopFlags()
    # Two members, the first of them started again, both with their trap set.
    stop_when(lambda: len(started) == 3 and len(list(tmp_path.iterdir())) == 2, flags)
    assert processes.run_members(2, [], 0, flags) == 0
    assert [p.returncode for p in started] == [3, 0, 0]


def test_a_member_the_forwarded_sigterm_ends_before_its_handlers_stopped_as_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member still starting (no handler yet) dies of the SIGTERM forwarded to it: a clean stop,
    not status 143 as if it had been killed."""
    started = members_running(monkeypatch, "while :; do sleep 0.02; done")
    flags = StopFlags()
    stop_when(lambda: len(started) == 2, flags)
    assert processes.run_members(2, [], 0, flags) == 0
    assert [p.returncode for p in started] == [-signal.SIGTERM, -signal.SIGTERM]


def test_a_stop_before_the_members_are_started_starts_none(monkeypatch: pytest.MonkeyPatch) -> None:
    started = members_running(monkeypatch, MEMBER)
    flags = StopFlags()
    flags.stop.set()
    assert processes.run_members(3, [], 0, flags) == 0
    assert started == []


def test_a_stop_before_a_lone_member_runs_ends_it_cleanly_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM is captured first thing: one that comes while the process starts is kept, and a
    member stopped before it runs ends with 0 and starts nothing (as PID 1 with no handler, the
    SIGTERM was discarded and the messenger ran on)."""
    import messenger.__main__ as main_module
    import messenger.service

    monkeypatch.setenv("METRICS_PORT", "0")
    happened: list[str] = []

    class Messenger:
        def __init__(self, settings: object) -> None:
            happened.append("built")

        def run(self, *args: object) -> None:
            happened.append("ran")

    monkeypatch.setattr(messenger.service, "Messenger", Messenger)
    real_parse = main_module.parse_args

    def parse_then_sigterm(argv: list[str] | None) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # as docker stop would, while the process starts
        return real_parse(argv)

    monkeypatch.setattr(main_module, "parse_args", parse_then_sigterm)
    # Where the messenger's own handler is not in place yet, the SIGTERM is lost (as at PID 1).
    previous = signal.signal(signal.SIGTERM, lambda *_: happened.append("lost"))
    try:
        assert main_module.main(["btcusdt", "--processes", "1"]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert happened == []


def test_processes_on_the_command_line_is_bounded_as_the_setting_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """PROCESSES=100000 is refused ("above the maximum 256"), but
    ``python -m messenger --processes 100000`` goes straight to run_members and starts 100,000
    member processes (only a negative number is refused)."""
    import messenger.__main__ as main_module

    started: list[int] = []

    def run_members(count: int, argv: object, port: int, flags: object = None) -> int:
        started.append(count)
        return 0

    monkeypatch.setattr(main_module, "run_members", run_members)
    monkeypatch.setenv("METRICS_PORT", "0")
    assert main_module.main(["btcusdt", "--processes", "100000"]) == 2
    assert started == []
