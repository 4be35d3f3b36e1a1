"""A slow-body attack and a normal client to measure beside it, for tests and bench/slow_body.py.

``SlowBodies`` holds many sockets, each sending a request's headers that declare a body, then
one byte of that body every ``interval_s``: the attack gunicorn's header timeout does not cover.
It runs on one thread with non-blocking sockets; a socket the server answers or closes is opened
again at once (``reopen``), so the pressure lasts as long as the attack. ``stop()`` closes all.
``AttackProcess`` runs it in a process of its own, as another machine would: a thread beside the
client being measured would take its share of that client's GIL.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import http.client
import itertools
import math
import multiprocessing
import resource
import selectors
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

REQUEST = (
    "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    "Content-Length: {declared}\r\n\r\n"
)


def allow_open_files(wanted: int) -> int:
    """Raise this process's open-file limit toward ``wanted`` (within the hard limit); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


@dataclass
class AttackStats:
    """What the attack saw."""

    opened: int = 0  # connections made (first ones and reopened ones)
    answered: dict[int, int] = field(default_factory=dict)  # HTTP status -> how many
    closed_unanswered: int = 0  # closed or reset by the server without an answer
    failed_connects: int = 0
    bytes_sent: int = 0
    held_max: int = 0  # most connections open at once
    cpu_s: float = 0.0  # CPU the attack's process used


class SlowBodies:
    """``sockets`` connections to ``port``, each trickling a declared ``declared``-byte body."""

    def __init__(
        self,
        port: int,
        sockets: int,
        interval_s: float,
        declared: int = 1000,
        path: str = "/snapshot/BTC_USDT",
        reopen: bool = True,
    ) -> None:
        self.address = ("127.0.0.1", port)
        self.sockets = sockets
        self.interval_s = interval_s
        self.head = REQUEST.format(path=path, declared=declared).encode()
        self.reopen = reopen
        self.stats = AttackStats()
        self._selector = selectors.DefaultSelector()
        self._next_byte: dict[socket.socket, float] = {}  # every open socket: when its next byte is due
        self._due: list[tuple[float, int, socket.socket]] = []  # a heap of the same, stale entries skipped
        self._order = itertools.count()
        self._sending = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-bodies", daemon=True)

    def start(self) -> None:
        """Open every socket (from the attack's thread) and keep them trickling."""
        self._thread.start()

    def held(self) -> int:
        """Connections open now (connected or connecting)."""
        return len(self._next_byte)

    def sending(self) -> int:
        """Connections that have sent their headers and are trickling their body."""
        return self._sending

    def stop(self) -> AttackStats:
        """End the attack: every socket closed."""
        self._stop.set()
        self._thread.join(30)
        return self.stats

    def _run(self) -> None:
        try:
            for n in range(self.sockets):
                if self._stop.is_set():
                    break
                # Spread the trickle over the interval rather than every byte at once.
                self._open(time.monotonic() + self.interval_s * n / self.sockets)
                if n % 200 == 199:
                    self._service(0)
            while not self._stop.is_set():
                self._service(0.05)
        finally:
            for sock in list(self._next_byte):
                self._close(sock)
            self._selector.close()

    def _open(self, first_byte_at: float) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            self.stats.failed_connects += 1
            sock.close()
            return
        self.stats.opened += 1
        self._schedule(sock, first_byte_at)
        self._selector.register(sock, selectors.EVENT_WRITE, "connecting")
        self.stats.held_max = max(self.stats.held_max, len(self._next_byte))

    def _service(self, timeout_s: float) -> None:
        for key, _ in self._selector.select(timeout_s):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "connecting":
                self._connected(sock)
            else:
                self._readable(sock)
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            due, _, sock = heapq.heappop(self._due)
            if self._next_byte.get(sock) != due:
                continue  # closed, or due later
            if self._selector.get_key(sock).data != "sending":
                self._schedule(sock, now + 0.05)  # still connecting
                continue
            self._send(sock, b" ")
            if sock in self._next_byte:
                self._schedule(sock, now + self.interval_s)

    def _schedule(self, sock: socket.socket, at: float) -> None:
        self._next_byte[sock] = at
        heapq.heappush(self._due, (at, next(self._order), sock))

    def _connected(self, sock: socket.socket) -> None:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.stats.failed_connects += 1
            self._close(sock, reopen=True)
            return
        self._selector.modify(sock, selectors.EVENT_READ, "sending")
        self._sending += 1
        self._send(sock, self.head)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            self.stats.bytes_sent += sock.send(data)
        except OSError:
            self.stats.closed_unanswered += 1
            self._close(sock, reopen=True)

    def _readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1.1 "):
            status = int(data[9:12])
            self.stats.answered[status] = self.stats.answered.get(status, 0) + 1
        else:
            self.stats.closed_unanswered += 1
        self._close(sock, reopen=True)

    def _close(self, sock: socket.socket, reopen: bool = False) -> None:
        self._next_byte.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            if self._selector.unregister(sock).data == "sending":
                self._sending -= 1
        sock.close()
        if reopen and self.reopen and not self._stop.is_set():
            self._open(time.monotonic() + self.interval_s)


class AttackProcess:
    """``SlowBodies`` in a process of its own; what it holds is read through shared counters."""

    def __init__(self, port: int, sockets: int, interval_s: float, reopen: bool = True) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._sending = ctx.Value("i", 0)
        self._held = ctx.Value("i", 0)
        self._answered = ctx.Value("i", 0)
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        counters = (self._sending, self._held, self._answered)
        args = (port, sockets, interval_s, reopen, counters, self._stop, self._out)
        self._process = ctx.Process(target=_attack, args=args, daemon=True)
        self.stats: AttackStats | None = None

    def start(self) -> None:
        """Start the attack."""
        self._process.start()

    def sending(self) -> int:
        """Connections trickling their body now."""
        return int(self._sending.value)

    def held(self) -> int:
        """Connections open now."""
        return int(self._held.value)

    def answered(self) -> int:
        """Connections the server answered so far."""
        return int(self._answered.value)

    def stop(self) -> AttackStats:
        """End the attack: every socket closed; what it saw."""
        if self.stats is None:
            self._stop.set()
            self.stats = AttackStats(**self._out.get(timeout=60))
            self._process.join(30)
        return self.stats


def _attack(
    port: int, sockets: int, interval_s: float, reopen: bool, counters: Any, stop: Any, out: Any
) -> None:
    allow_open_files(sockets + 1000)
    attack = SlowBodies(port, sockets, interval_s, reopen=reopen)
    attack.start()
    sending, held, answered = counters
    while not stop.wait(0.02):
        sending.value, held.value = attack.sending(), attack.held()
        answered.value = sum(attack.stats.answered.values())
    stats = attack.stop()
    held.value = attack.held()
    out.put({**asdict(stats), "answered": dict(stats.answered), "cpu_s": time.process_time()})


@dataclass
class Latencies:
    """A normal client's requests: how long each took, and what each answered."""

    ms: list[float] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # when each began (time.monotonic())
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def p(self, q: float, since: float = 0.0, until: float = math.inf) -> float:
        """The q-th percentile (0-100) in ms, by the nearest rank, of requests begun in [since, until)."""
        ordered = sorted(ms for ms, at in zip(self.ms, self.at, strict=True) if since <= at < until)
        if not ordered:
            return float("nan")
        return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]

    def count(self, since: float = 0.0, until: float = math.inf) -> int:
        """Requests begun in [since, until)."""
        return sum(1 for at in self.at if since <= at < until)


def normal_client(
    port: int, seconds: float, path: str = "/snapshot/BTC_USDT", timeout_s: float = 5.0
) -> Latencies:
    """A well-behaved client for ``seconds``: one POST after another, each on a new connection."""
    seen = Latencies()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        seen.at.append(time.monotonic())
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        try:
            conn.request("POST", path)
            response = conn.getresponse()
            response.read()
            status = response.status
        except OSError as exc:
            seen.errors.append(f"{type(exc).__name__}: {exc}")
            status = 0
        finally:
            conn.close()
        seen.ms.append((time.perf_counter() - started) * 1000)
        seen.statuses[status] = seen.statuses.get(status, 0) + 1
        time.sleep(0.005)
    return seen


def short_body(
    port: int, declared: int = 100, sent: bytes = b"{}", timeout_s: float = 60.0
) -> tuple[float, int, Any]:
    """A request that declares ``declared`` body bytes, sends ``sent`` and waits: (seconds until the
    answer, its status, its JSON body); status 0 if none came within ``timeout_s``."""
    head = f"POST /snapshot/BTC_USDT HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head.encode() + sent)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
        except OSError:
            return time.monotonic() - started, 0, None
        raw = response.read()
    return time.monotonic() - started, response.status, orjson.loads(raw) if raw else None
