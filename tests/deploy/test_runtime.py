"""What a new user meets: `make demo` and `make run` from the runtime requirements alone.

The development environment has packages the runtime does not (pytest, schemathesis, ...), and any
of them can hide a missing runtime dependency, as `packaging` hid that gunicorn's gevent worker
needs gunicorn's `gevent` extra. So these tests build a virtualenv from requirements.txt and
requirements-sim.txt only, with the Makefile's own rule (what `make run` does on a fresh clone),
and run the README's commands with it, in a process group of their own like a terminal would.
The virtualenv is kept under .venv/, keyed by a hash of the two files: a change rebuilds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.processes import AS_FROM_A_TERMINAL, ROOT, Browser, free_port, http, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RUNTIME_REQUIREMENTS = ("requirements.txt", "requirements-sim.txt")
SNAPSHOT_TTL_MS = 1000  # the shipped default


def runtime_key() -> str:
    """What the runtime virtualenv is built from: the two files and the Python version."""
    digest = hashlib.sha256(sys.version.encode())
    for name in RUNTIME_REQUIREMENTS:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def user_env(**settings: str) -> dict[str, str]:
    """A user's environment: nothing of the development virtualenv or of a calling make."""
    dev_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env = {k: v for k, v in env.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != dev_bin)
    env.update(settings)
    return env


@pytest.fixture(scope="session")
def runtime_venv() -> Path:
    """A virtualenv of the runtime requirements only, built by the Makefile's rule."""
    cache = ROOT / ".venv"
    cache.mkdir(exist_ok=True)
    venv = cache / f"runtime-{runtime_key()}"
    with open(cache / "runtime.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for old in cache.glob("runtime-*"):
            if old != venv and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        built = subprocess.run(
            ["make", f"VENV={venv}", f"{venv}/.runtime"],
            cwd=ROOT,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
        assert built.returncode == 0, f"building the runtime virtualenv failed:\n{built.stdout}{built.stderr}"
    return venv


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (they run in sessions of their own, so a group signal misses them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Terminal:
    """A command as a user runs it in a terminal: its own process group, output kept, Ctrl-C."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, url: str) -> None:
        self.url = url  # the server's
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [*AS_FROM_A_TERMINAL, *argv],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen: set[int] = set()

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first match of ``pattern`` in the output; fails if it does not come or the command ends."""

        def check() -> re.Match[str] | None:
            self.seen |= descendants(self.proc.pid)
            match = re.search(pattern, self.output())
            if match is None and self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}) before {pattern!r}")
            return match

        try:
            found: re.Match[str] = wait_until(check, timeout_s, 0.1, what=pattern)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n----- output -----\n{self.output()[-6000:]}") from None
        return found

    def ctrl_c(self, timeout_s: float = 30) -> int:
        """What a terminal's Ctrl-C does (SIGINT to the foreground group); the exit status."""
        self.seen |= descendants(self.proc.pid)
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            left = [pid for pid in self.seen if alive(pid)]
            raise AssertionError(
                f"still running {timeout_s} s after Ctrl-C (pids left: {left})\n"
                f"----- output -----\n{self.output()[-6000:]}"
            ) from None

    def close(self) -> None:
        """Stop whatever is still running, the launcher's children included."""
        if self.proc.poll() is None:
            self.seen |= descendants(self.proc.pid)
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(30)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.seen:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def terminal(logs_dir: Path, runtime_venv: Path, request: pytest.FixtureRequest) -> Iterator[Terminal]:
    """``make demo`` (or ``make run`` with ``@pytest.mark.parametrize("terminal", [...])``) from the
    runtime virtualenv, on free ports, as a user runs it."""
    target, *settings = getattr(request, "param", ("demo",))
    ports = {name: str(free_port()) for name in ("PORT", "SIM_PORT", "METRICS_PORT")}
    overrides = dict(setting.split("=", 1) for setting in settings)
    env = user_env(**ports, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", **overrides)
    argv = ["make", target, f"VENV={runtime_venv}", "SYMBOLS=btcusdt bnbbtc"]
    log = logs_dir / f"make-{target}-{ports['PORT']}.log"
    term = Terminal(argv, env, log, f"http://127.0.0.1:{ports['PORT']}")
    yield term
    term.close()


def snapshot(term: Terminal, symbol: str = "BTC_USDT") -> int:
    """The status of ``POST /snapshot/<symbol>`` (0: no answer)."""
    try:
        return http("POST", f"{term.url}/snapshot/{symbol}", timeout_s=2)[0]
    except OSError:
        return 0


def served(term: Terminal, symbol: str) -> bool:
    """Whether ``POST /snapshot/<symbol>`` answers 200."""
    return snapshot(term, symbol) == 200


def readyz(term: Terminal) -> tuple[int, dict[str, object]]:
    """``GET /readyz``: status and body."""
    status, _, body = http("GET", f"{term.url}/readyz", timeout_s=2)
    return status, body


def test_make_demo_from_the_runtime_requirements_alone_serves_and_stops_quietly_on_ctrl_c(
    terminal: Terminal,
) -> None:
    """The issue's new user: `make demo` on a fresh clone, curl, Ctrl-C."""
    terminal.wait_for(r"run: serving on http://127\.0\.0\.1:\d+", 120)
    # The shipped server settings: gevent's worker (batched accepts, JSON for gunicorn's errors).
    assert "Using worker: server.gevent_worker.GeventWorker" in terminal.output()
    for symbol in ("BTC_USDT", "BNB_BTC"):  # the proof of concept's `messenger.py btcusdt bnbbtc`
        wait_until(partial(served, terminal, symbol), 10, what=f"200 for {symbol}")
    started = set(terminal.seen)
    assert len([p for p in started if alive(p)]) >= 5  # make, run-local, redis, simulator, messenger, server
    assert terminal.ctrl_c() in (0, 2, 130, -signal.SIGINT)
    output = terminal.output()
    assert "Traceback" not in output, output[-6000:]
    assert "run: stopping" in output
    assert not [p for p in started if alive(p)], "Ctrl-C left processes running"


def test_make_demo_restarts_a_killed_messenger_while_server_and_redis_answer(terminal: Terminal) -> None:
    """Kill the messenger: the server answers 500 (and /readyz 503) within the TTL + 1 s, the launcher
    says it restarts it, and 200s come back."""
    terminal.wait_for(r"run: serving on", 120)
    pid = int(terminal.wait_for(r"run: messenger pid (\d+)", 5)[1])
    wait_until(lambda: snapshot(terminal) == 200 and readyz(terminal)[0] == 200, 15, what="200 and ready")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: snapshot(terminal) == 500, SNAPSHOT_TTL_MS / 1000 + 1, what="500 after the kill")
    wait_until(lambda: readyz(terminal)[0] == 503, SNAPSHOT_TTL_MS / 1000 + 1, what="/readyz 503")
    assert time.monotonic() - killed <= SNAPSHOT_TTL_MS / 1000 + 1
    # Its members (one per core) go with it: which one the server notices first names the reason.
    reason = readyz(terminal)[1]["reason"]
    assert isinstance(reason, str) and ("heartbeat" in reason or "member" in reason), reason
    notice = terminal.wait_for(
        r"run: the messenger exited \(killed by SIGKILL\).*restarting it in (\d+) s", 5
    )
    assert snapshot(terminal) == 500  # the pause is visible: still 500, from a server that answers
    terminal.wait_for(r"run: messenger restarted \(pid \d+\)", int(notice[1]) + 5)
    wait_until(lambda: snapshot(terminal) == 200, 15, what="200 again after the restart")
    wait_until(lambda: readyz(terminal)[0] == 200, 5, what="ready again")


NOWHERE = f"127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize(
    "terminal",
    [("run", f"BINANCE_WS_URL=ws://{NOWHERE}", f"BINANCE_REST_URL=http://{NOWHERE}")],
    indirect=True,
)
def test_make_run_with_binance_unreachable_says_so_and_is_not_ready(
    terminal: Terminal, logs_dir: Path
) -> None:
    """Nothing answers at Binance's URLs: the log says so plainly (which URL, what failed, that
    `make demo` works offline), /readyz is 503 with the reason, the status page says "Binance
    unreachable", and the messenger keeps trying."""
    terminal.wait_for(r"run: serving on", 120)
    began = time.monotonic()
    for url in (f"ws://{NOWHERE}", f"http://{NOWHERE}/api/v3/exchangeInfo"):
        line = terminal.wait_for(rf"binance: unreachable: {re.escape(url)}: .*", 10)[0]
        assert "make demo" in line
    assert time.monotonic() - began < 10
    # Its members (one per core) say it alike: the one carrying streams has no live connection, one
    # carrying none has no symbol list; either way Binance is named unreachable. (Each member names it
    # once its own first attempts failed and its next heartbeat says so: within a second or two of
    # the first member's log line, so the reason is waited for, not read once.)
    said = ("the messenger has no live connection to Binance (Binance",
            "the messenger has no symbol list from Binance yet (Binance unreachable")  # fmt: skip
    answers: list[tuple[int, dict[str, object]]] = []

    def names_binance_unreachable() -> bool:
        answers.append(readyz(terminal))
        status, body = answers[-1]
        return status == 503 and str(body.get("reason")).startswith(said)

    try:
        wait_until(names_binance_unreachable, 5, what="/readyz naming Binance unreachable")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last /readyz: {answers[-1:]}") from None
    assert "Traceback" not in terminal.output()
    # It keeps trying: the next attempt comes when the last failure said it would.
    attempts = re.findall(r"conn (\d+): connect failed: .*; reconnecting in ([\d.]+) s", terminal.output())
    last, delay = attempts[-1]
    terminal.wait_for(rf"conn {int(last) + 1}: connecting to ws://{re.escape(NOWHERE)}", float(delay) + 5)

    browser = Browser(logs_dir)
    try:
        browser.open(f"{terminal.url}/")
        summary = "document.getElementById('summary').textContent"
        text = wait_until(lambda: "Binance" in (browser.text(summary) or "") and browser.text(summary), 10)
        assert "Binance unreachable" in text and "messenger up" not in text
        assert NOWHERE in browser.text("document.getElementById('problem').textContent")
    finally:
        browser.close()
