"""Ctrl-C on each process run by hand, as the README runs them: a clean stop, no traceback.

A terminal's Ctrl-C is SIGINT to the whole foreground process group: gunicorn's master and its
gevent workers get it at once (gunicorn's own worker then ends with ``sys.exit`` in a greenlet,
which gevent printed as two tracebacks per worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT, RedisServer, free_port, http, wait_until

WORKERS = 2


@pytest.mark.parametrize("module", ["server", "simulator"])
def test_ctrl_c_stops_a_process_run_by_hand_without_a_traceback(
    module: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_server.url, "LOG_LEVEL": "INFO",
           "WEB_CONCURRENCY": str(WORKERS)}  # fmt: skip
    argv = [sys.executable, "-m", module] + (["--port", str(port)] if module == "simulator" else [])
    log = tmp_path / f"{module}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        path = "/healthz" if module == "server" else "/api/v3/ping"
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}{path}")[0] == 200, 30, 0.1)
        if module == "server":  # a user presses Ctrl-C once it runs, not while workers boot
            booted = lambda: log.read_text(errors="replace").count("Booting worker") == WORKERS  # noqa: E731
            wait_until(booted, 30, 0.1, what="every worker to boot")
            wait_until(
                lambda: all(http("GET", f"http://127.0.0.1:{port}{path}")[0] == 200 for _ in range(20)), 10
            )
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(log.read_text(errors="replace")[-4000:]) from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output[-4000:]
