"""``python -m messenger --processes N``: N members on this machine, one process each.

Each child is a whole messenger (a member of its own: messenger.membership), so the streams
spread over N cores. The parent only starts them, forwards SIGTERM and SIGINT once to each
(they run in process groups of their own, so a Ctrl-C reaches each one once, through it), and
waits; a child that ends is not restarted (the others take its streams). A child whose parent
is gone (killed) is told to stop, so no member outlives its launcher. Each child gets a metrics
port of its own (METRICS_PORT + its index).
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

from messenger.signals import StopFlags, captured

logger = logging.getLogger(__name__)

POLL_S = 0.2
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before it runs (Linux): SIGTERM when the parent dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_members(count: int, argv: Sequence[str], metrics_port: int) -> int:
    """Run ``count`` member processes with these messenger arguments until they end; returns
    0 if every one ended cleanly, else the first failing status."""
    children: list[subprocess.Popen[bytes]] = []
    with captured(StopFlags()) as flags:
        for index in range(count):
            env = {**os.environ, "PROCESSES": "1"}
            if metrics_port and metrics_port + index <= 65535:
                env["METRICS_PORT"] = str(metrics_port + index)
            children.append(
                subprocess.Popen(  # noqa: S603 (this very program, with its own arguments)
                    [sys.executable, "-m", "messenger", *argv],
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads yet in this parent)
                )
            )
        logger.info("messenger: %d member processes: %s", count, ", ".join(str(c.pid) for c in children))
        sent: set[signal.Signals] = set()
        running = set(children)
        while running:
            # First a graceful stop (SIGTERM) to each, then a forced one if asked (a second Ctrl-C).
            due = signal.SIGINT if flags.force else signal.SIGTERM if flags.stop.is_set() else None
            if due is not None and due not in sent:
                sent.add(due)
                for child in running:
                    child.send_signal(due)
            for child in [c for c in running if c.poll() is not None]:
                running.discard(child)
                if not sent:
                    logger.warning("messenger: member process %d exited (status %d); not restarted",
                                   child.pid, child.returncode)  # fmt: skip
            time.sleep(POLL_S)
    # As a shell says it: a member killed by signal N is 128 + N (Popen says -N).
    statuses = [128 - c.returncode if c.returncode < 0 else c.returncode for c in children]
    return next((s for s in statuses if s != 0), 0)
