"""Real processes for tests: redis-server, redis-sentinel, the simulator, the messenger and gunicorn.

Each starts on a free 127.0.0.1 port, logs to a file (shown when a test fails), and is
stopped by the fixture that started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from contract.keys import SYMBOLS_KEY

ROOT = Path(__file__).resolve().parent.parent

# How a terminal starts a command: with SIGINT and SIGQUIT at their defaults. A test run started as
# a background job of a script (`.ci/run ... &`, nohup) inherits both ignored, and an ignored signal
# stays ignored in every child: Python keeps it so, and a non-interactive bash cannot even trap it
# (run-local's Ctrl-C trap was silently void: two CI runs of a `make demo` test hung 30 s after its
# Ctrl-C). A test that presses Ctrl-C starts its command through this prefix (coreutils' env).
AS_FROM_A_TERMINAL = ["env", "--default-signal=INT,QUIT"]


def symbol_list_loaded(client: redis.Redis, timeout_s: float = 10) -> None:
    """Wait for the messenger's symbol list (exchangeInfo) in Redis: until it is there, the server
    rightly answers 503 for any symbol it does not stream yet."""
    wait_until(lambda: client.exists(SYMBOLS_KEY), timeout_s, what="the symbol list")


# ``TRANSMUTE_PORTS=19200-19299``: take ports from this range only (several people sharing a machine).
PORTS_ENV = "TRANSMUTE_PORTS"
WS_TRANSPORT_ENV = "TRANSMUTE_TEST_WS_TRANSPORT"
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port nobody listens on right now (within TRANSMUTE_PORTS, if set: each once, while
    others are left)."""
    span = os.environ.get(PORTS_ENV)
    if not span:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port
    low, _, high = span.partition("-")
    ports = range(int(low), int(high) + 1)
    if _handed_out.issuperset(ports):
        _handed_out.clear()
    for candidate in ports:
        if candidate in _handed_out:
            continue
        _handed_out.add(candidate)
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", candidate))
            return candidate
    raise RuntimeError(f"no free port in {PORTS_ENV}={span}")


def wait_until(check: Callable[[], Any], timeout_s: float, interval_s: float = 0.02, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last answer at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = check()
        except (OSError, redis.RedisError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}: last {last!r}")
        time.sleep(interval_s)


def http(
    method: str, url: str, body: bytes | None = None, timeout_s: float = 5.0
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request: (status, headers, parsed JSON body or the raw text)."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, headers, orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return status, headers, raw.decode("utf-8", "replace")


class Process:
    """A child process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        # Names come from ports, and ports are handed out again (TRANSMUTE_PORTS): a log of its own,
        # never one left by an earlier process of the same name (restarts of this one append).
        self.log_path = log_dir / f"{name}.log"
        n = 1
        while self.log_path.exists():
            n += 1
            self.log_path = log_dir / f"{name}.{n}.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) the process."""
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child, closed on stop)
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        log.close()

    def ready_or_stopped(self, check: Callable[[], Any], timeout_s: float, what: str) -> None:
        """Wait until ``check`` holds; if it never does, stop the process first (a start that failed
        leaves nothing running, whoever started it) and fail with the end of its log."""
        try:
            wait_until(check, timeout_s, what=what)
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n----- {self.name} -----\n{self.log()[-3000:]}") from None
        except BaseException:  # the check itself failed (or the test was interrupted)
            self.stop()
            raise

    def running(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        """Send a signal."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class RedisServer(Process):
    """A private redis-server: no persistence, on its own port."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        """``args``: more of redis-server's options (``--replicaof``, ``--cluster-enabled``...)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (apt-get install redis-server); .ci/run installs it"
            )
        self.port = free_port()
        if "--cluster-enabled" in args and "--cluster-port" not in args:
            # A node's bus listens on port + 10,000 by default, past 65,535 for a port above
            # 55,535 (the node exits): a free port of its own instead.
            args = (*args, "--cluster-port", str(free_port()))
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(log_dir), *args]  # fmt: skip
        super().__init__(f"redis-{self.port}", argv, log_dir)

    @property
    def url(self) -> str:
        """Its REDIS_URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client for assertions."""
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def start(self) -> None:
        """Start and wait until it answers PING."""
        super().start()
        self.ready_or_stopped(self.ping, 10, what="redis-server to answer")

    def ping(self) -> bool:
        """Whether it answers."""
        with self.client() as client:
            return bool(client.ping())


class RedisSentinel(Process):
    """A private ``redis-sentinel`` watching one primary as ``service``, with short timings: a
    primary silent for ``down_after_ms`` is down, and a failover is tried again after twice
    ``failover_timeout_ms``."""

    def __init__(
        self,
        log_dir: Path,
        primary_port: int,
        service: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 800,
        failover_timeout_ms: int = 1500,
    ) -> None:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            raise RuntimeError(
                "redis-sentinel is not installed (apt-get install redis-sentinel); .ci/run installs it"
            )
        self.port = free_port()
        self.service = service
        # The sentinel rewrites its configuration as it learns: a file of its own.
        config = log_dir / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {log_dir}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        super().__init__(f"sentinel-{self.port}", [binary, str(config)], log_dir)

    def client(self) -> redis.Redis:
        """A client of the sentinel itself (SENTINEL commands)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        """Start and wait until it answers PING."""
        super().start()
        self.ready_or_stopped(self.ping, 10, what="redis-sentinel to answer")

    def ping(self) -> bool:
        """Whether it answers."""
        with self.client() as client:
            return bool(client.ping())

    def primary(self) -> tuple[str, int] | None:
        """Where it says the primary is (None while it knows no primary that answers)."""
        state = self._master()
        if "s_down" in state["flags"] or "o_down" in state["flags"]:
            return None
        return state["ip"], int(state["port"])

    def _master(self) -> dict[str, str]:
        with self.client() as client:
            state: dict[str, str] = client.execute_command("SENTINEL", "MASTER", self.service)
        return state

    def others(self) -> int:
        """The other sentinels it knows of."""
        return int(self._master()["num-other-sentinels"])

    def replicas(self) -> dict[int, str]:
        """The replicas it knows of: port -> flags (``slave``, or ``slave,s_down``...)."""
        with self.client() as client:
            found: Any = client.execute_command("SENTINEL", "REPLICAS", self.service)
        return {int(r["port"]): r["flags"] for r in found}


def replica_ready(primary: RedisServer, replica: RedisServer, sentinels: list[RedisSentinel]) -> bool:
    """The replica copies the primary in sync, and every sentinel sees it up."""
    with primary.client() as client:
        info: Any = client.info("replication")
    online = any(
        isinstance(v, dict) and v.get("port") == replica.port and v.get("state") == "online"
        for k, v in info.items()
        if k.startswith("slave")
    )
    return online and all(s.replicas().get(replica.port) == "slave" for s in sentinels)


class Simulator(Process):
    """``python -m simulator`` with helpers for its control API."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "simulator", "--port", str(self.port), *args]
        super().__init__(f"simulator-{self.port}", argv, log_dir)

    @property
    def ws_url(self) -> str:
        """BINANCE_WS_URL for the messenger."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        """BINANCE_REST_URL for the messenger."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until REST answers."""
        super().start()
        ping = f"{self.rest_url}/api/v3/ping"
        self.ready_or_stopped(lambda: http("GET", ping)[0] == 200, 15, "the simulator")

    def control(self, method: str, path: str, doc: dict[str, Any] | None = None) -> Any:
        """Call the control API; fails the test on a non-200 answer."""
        status, _, body = http(
            method, f"{self.rest_url}/_sim/{path}", orjson.dumps(doc) if doc is not None else None
        )
        assert status == 200, (path, status, body)
        return body

    def state(self) -> dict[str, Any]:
        """Connections, requests and counters as the exchange saw them."""
        state: dict[str, Any] = self.control("GET", "state")
        return state

    def sessions(self) -> list[dict[str, Any]]:
        """Open connections."""
        sessions: list[dict[str, Any]] = self.state()["sessions"]
        return sessions

    def fault(self, fault: str, **params: Any) -> Any:
        """Inject a fault (on every connection unless ``session=`` is given)."""
        return self.control("POST", "fault", {"fault": fault, **params})

    def market(self, **params: Any) -> Any:
        """Change rate, flood or quiet symbols."""
        return self.control("POST", "market", params)

    def set_book(self, symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str) -> dict[str, Any]:
        """Send a given top of book now; returns what was sent, with its update id."""
        doc = {
            "symbol": symbol,
            "bid_price": bid,
            "bid_quantity": bid_qty,
            "ask_price": ask,
            "ask_quantity": ask_qty,
        }
        sent: dict[str, Any] = self.control("POST", "book", doc)
        return sent

    def book(self, symbol: str) -> dict[str, Any]:
        """The current top of book of a symbol."""
        book: dict[str, Any] = self.control("GET", f"book/{symbol}")
        return book

    def recorded(self, since: int = 0) -> dict[str, Any]:
        """What it published after cursor ``since`` (started with ``--record``): ``next``, ``lost``,
        ``entries`` as ``[epoch_ms, stream, payload or None]``."""
        dump: dict[str, Any] = self.control("GET", f"record?since={since}")
        return dump


def messenger_env(sim: Simulator, redis_url: str, **settings: Any) -> dict[str, str]:
    """The environment of a messenger pointed at ``sim`` and ``redis_url``, plus settings."""
    env = {
        "BINANCE_WS_URL": sim.ws_url,
        "BINANCE_REST_URL": sim.rest_url,
        "REDIS_URL": redis_url,
        "RECONNECT_MIN_MS": "100",
        "RECONNECT_MAX_MS": "1000",
        "STATS_INTERVAL_S": "1",
        "LOG_LEVEL": "INFO",
        "METRICS_PORT": "0",
        # One simulator is one Binance seen from one address: the messengers of a test share its
        # budget, and the session's Redis carries no budget over from another test's simulator.
        "EGRESS": f"sim{sim.port}",
    }
    # Every messenger the tests start reads its frames with this transport, if set (the suite runs
    # on both: `TRANSMUTE_TEST_WS_TRANSPORT=picows`); a test's own WS_TRANSPORT wins.
    if transport := os.environ.get(WS_TRANSPORT_ENV):
        env["WS_TRANSPORT"] = transport
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


class Messenger(Process):
    """``python -m messenger`` against a simulator."""

    def __init__(self, log_dir: Path, env: dict[str, str], *symbols: str) -> None:
        super().__init__(
            f"messenger-{free_port()}", [sys.executable, "-m", "messenger", *symbols], log_dir, env
        )


class Gunicorn(Process):
    """The server as shipped: gunicorn with our config, on a free port."""

    def __init__(
        self,
        log_dir: Path,
        redis_url: str,
        workers: int | None = 2,
        app: str = "server:create_app()",
        **settings: Any,
    ) -> None:
        """``workers=None``: as many as the shipped config chooses; ``app``: another WSGI app
        under the same config (a benchmark's baseline)."""
        self.port = free_port()
        env = {"REDIS_URL": redis_url, "PORT": str(self.port)}
        if workers is not None:
            env["WEB_CONCURRENCY"] = str(workers)
        env.update({k.upper(): str(v) for k, v in settings.items()})
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:server.gunicorn_conf", app]
        super().__init__(f"gunicorn-{self.port}", argv, log_dir, env)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it answers HTTP."""
        super().start()
        self.ready_or_stopped(lambda: http("GET", f"{self.url}/snapshot/x")[0] == 400, 20, "gunicorn")

    def snapshot(self, symbol: str, query: str = "", body: bytes | None = None) -> tuple[int, Any]:
        """``POST /snapshot/<symbol>``: (status, JSON body)."""
        status, _, doc = http("POST", f"{self.url}/snapshot/{symbol}{query}", body)
        return status, doc


class EventStream:
    """A real HTTP client reading a Server-Sent Events stream on a thread of its own."""

    def __init__(self, url: str) -> None:
        import http.client
        import queue
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        self.conn.connect()
        self.sock = self.conn.sock
        self.conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = dict(self.response.getheaders())
        self._reader = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._reader.start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            while True:
                line = self.response.readline()
                if not line:
                    return
                text = line.decode().rstrip("\n")
                if text.startswith(":"):
                    self.events.put({"comment": text[1:].strip()})
                elif text == "":
                    if event:
                        self.events.put(event)
                    event = {}
                else:
                    field, _, value = text.partition(":")
                    event[field] = value.strip()
        except (OSError, ValueError, AttributeError):  # AttributeError: closed under our feet
            return

    def next(self, timeout_s: float, where: Any = None) -> dict[str, Any]:
        """The next event (or comment) that matches ``where``; fails at the deadline."""
        import queue

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                item = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching event within {timeout_s} s") from None
            if "data" in item and item.get("event") in ("snapshot", "stale"):
                item["json"] = orjson.loads(item["data"])
            if where is None or where(item):
                return item

    def close(self) -> None:
        """Hang up (shutting the socket down wakes the reader thread)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
        self.conn.close()
        if self._reader.is_alive():
            self._reader.join(5)


class Browser:
    """Headless Chromium (Debian's), driven over the DevTools protocol with websocket-client."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic")  # fmt: skip

    def __init__(self, log_dir: Path) -> None:
        import websocket

        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium); .ci/run installs it")
        self.profile = log_dir / f"chromium-{free_port()}"
        argv = [
            binary,
            *self.FLAGS,
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "DevTools listening on" in line:
                port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
                break
        else:
            raise RuntimeError("chromium did not start")
        _, _, targets = http("GET", f"http://127.0.0.1:{port}/json/list")
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=10, suppress_origin=True)
        self._ids = 0

    def send(self, method: str, **params: Any) -> Any:
        """Call a DevTools method; its result."""
        self._ids += 1
        self.ws.send(orjson.dumps({"id": self._ids, "method": method, "params": params}).decode())
        while True:
            reply = orjson.loads(self.ws.recv())
            if reply.get("id") == self._ids:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str, width: int = 1200, height: int = 800, mobile: bool = False) -> None:
        """Load a page at a window size."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        self.send("Page.navigate", url=url)

    def text(self, script: str) -> Any:
        """The value of a JavaScript expression on the page."""
        result = self.send("Runtime.evaluate", expression=script, returnByValue=True)
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page."""
        import base64

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        """Quit Chromium."""
        with contextlib.suppress(OSError):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)
