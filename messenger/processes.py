"""``python -m messenger --processes N``: N members on this machine, one process each.

Each child is a whole messenger (a member of its own: messenger.membership), so the streams
spread over N cores. The parent starts them, forwards SIGTERM and SIGINT once to each (they run
in process groups of their own, so a Ctrl-C reaches each one once, through it), and waits. A
child that ends on its own (a crash, the OOM killer, a stray SIGKILL) is started again after a
backoff: nothing else would, since what supervises the launcher (Docker's restart policy,
scripts/run-local) sees only the launcher, which stays up; meanwhile the others take its streams.
A child whose parent is gone (killed) is told to stop, so no member outlives its launcher. Each
child gets a metrics port of its own (METRICS_PORT + its index).

A stop asked for before every child is started starts no more of them. A child that the
forwarded signal ended before its own handlers were in place (it was still starting) stopped as
asked: it counts as a clean end, not as a member killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from messenger.backoff import Backoff
from messenger.signals import StopFlags, captured

logger = logging.getLogger(__name__)

POLL_S = 0.2
# A member that ended on its own is started again after 3 s (as scripts/run-local restarts the
# messenger), doubling to 60 s while it keeps ending within RESTART_RESET_S of its start.
RESTART_S = 3.0
RESTART_MAX_S = 60.0
RESTART_RESET_S = 60.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before it runs (Linux): SIGTERM when the parent dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_members(count: int, argv: Sequence[str], metrics_port: int, flags: StopFlags | None = None) -> int:
    """Run ``count`` member processes with these messenger arguments until ``flags`` say stop
    (signals are captured here when no flags are given), starting again any that ends before;
    returns 0 if every one ended cleanly in the stop, else the first failing status."""
    if flags is None:
        with captured(StopFlags()) as own:
            return run_members(count, argv, metrics_port, own)

    def start(index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PROCESSES": "1"}
        if metrics_port and metrics_port + index <= 65535:
            env["METRICS_PORT"] = str(metrics_port + index)
        return subprocess.Popen(  # noqa: S603 (this very program, with its own arguments)
            [sys.executable, "-m", "messenger", *argv],
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads in this parent)
        )

    running: dict[int, tuple[subprocess.Popen[bytes], float]] = {}  # index -> process, started at
    for index in range(count):
        if flags.stop.is_set():
            break  # stopped while starting them: no more
        running[index] = start(index), time.monotonic()
    logger.info(
        "messenger: %d member processes: %s", count, ", ".join(str(c.pid) for c, _ in running.values())
    )
    backoffs = {index: Backoff(RESTART_S, RESTART_MAX_S) for index in running}
    restart_at: dict[int, float] = {}
    stopped: list[subprocess.Popen[bytes]] = []  # the members that ended in the stop
    sent: set[signal.Signals] = set()
    while running or (restart_at and not flags.stop.is_set()):
        # First a graceful stop (SIGTERM) to each, then a forced one if asked (a second Ctrl-C).
        due = signal.SIGINT if flags.force else signal.SIGTERM if flags.stop.is_set() else None
        if due is not None and due not in sent:
            sent.add(due)
            for child, _ in running.values():
                child.send_signal(due)
        now = time.monotonic()
        for index, (child, since) in list(running.items()):
            if child.poll() is None:
                continue
            del running[index]
            if sent:
                stopped.append(child)
                continue
            if now - since >= RESTART_RESET_S:
                backoffs[index].reset()
            delay = backoffs[index].next_delay()
            restart_at[index] = now + delay
            logger.warning("messenger: member process %d exited (%s); starting it again in %.1f s",
                           child.pid, _said(child.returncode), delay)  # fmt: skip
        for index, at in list(restart_at.items()):
            if not flags.stop.is_set() and now >= at:
                del restart_at[index]
                running[index] = start(index), now
                logger.info("messenger: member process %d started", running[index][0].pid)
        if sent and running:  # stopping: on as soon as a member ends, not at the next poll
            with contextlib.suppress(subprocess.TimeoutExpired):
                next(iter(running.values()))[0].wait(POLL_S)
        elif not sent:
            flags.stop.wait(POLL_S)  # a stop is forwarded as it comes, not at the next poll
    statuses = [_status(c.returncode, sent) for c in stopped]
    return next((s for s in statuses if s != 0), 0)


def _said(returncode: int) -> str:
    """How a member ended, for the log."""
    if returncode >= 0:
        return f"status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def _status(returncode: int, sent: set[signal.Signals]) -> int:
    """A member's exit status as a shell says it (Popen says -N for a death by signal N: 128 + N),
    but 0 for a death by the very signal forwarded to it: it was still starting, and stopped."""
    if returncode < 0 and -returncode in sent:
        return 0
    return 128 - returncode if returncode < 0 else returncode
