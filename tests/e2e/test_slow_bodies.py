"""Slow request bodies against gunicorn as shipped: they are cut at a deadline and never starve others.

The attack: sockets that send a request's headers declaring a 1,000-byte body, then a byte of
it every second. Here 2,500 of them against one worker (more than the 2,000 connections a
worker used to hold at all), while a normal client asks for a snapshot over and over, each
time on a new connection. The full-size attack (8,200 sockets, a byte every 5 s, against the
shipped worker count) is ``python -m bench.slow_body``; its figures are in the README.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.processes import Gunicorn, Messenger, RedisServer, Simulator, wait_until
from tests.slow_clients import AttackProcess, allow_open_files, normal_client, short_body

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

ATTACK_SOCKETS = 2_500
P99_LIMIT_MS = 100.0
# Long enough to measure the normal client over many requests while every attack socket is held.
DEADLINE_S = 12.0


@pytest.fixture
def one_worker(started: Any, logs_dir: Path, redis_server: RedisServer) -> Gunicorn:
    """The shipped config with one worker: the attack is more than one worker used to hold."""
    server = Gunicorn(logs_dir, redis_server.url, workers=1, BODY_TIMEOUT_MS=int(DEADLINE_S * 1000))
    started.add(server)
    return server


@pytest.fixture
def attack(one_worker: Gunicorn) -> Iterator[AttackProcess]:
    """The slow-body attack on the worker, from a process of its own; every socket closed at the end."""
    if allow_open_files(ATTACK_SOCKETS + 500) < ATTACK_SOCKETS + 500:
        pytest.skip(f"needs {ATTACK_SOCKETS + 500} open files (ulimit -Hn)")
    slow = AttackProcess(one_worker.port, ATTACK_SOCKETS, interval_s=1.0, reopen=False)
    yield slow
    slow.stop()
    assert slow.held() == 0


def test_slow_bodies_are_cut_at_the_deadline_and_normal_clients_are_served_meanwhile(
    sim_factory: Callable[..., Simulator],
    messenger_factory: Callable[..., Messenger],
    one_worker: Gunicorn,
    attack: AttackProcess,
    real_redis: Any,
) -> None:
    messenger_factory(sim_factory("--rate", "1"), "btcusdt")
    wait_until(lambda: one_worker.snapshot("BTC_USDT")[0] == 200, 10, what="a value to serve")
    # One request sends 2 bytes of a declared 100 and waits, in the attack's company for its whole
    # life (it starts first: the wave of cuts that ends the attack comes after its deadline).
    short: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: short.update(answer=short_body(one_worker.port)))
    waiter.start()
    attack.start()
    wait_until(attack.held, 10, 0.01, what="the attack's process to start")
    attack_started = time.monotonic()
    wait_until(lambda: attack.sending() == ATTACK_SOCKETS, 10, 0.05, what="every attack socket trickling")
    # The burst of 2,500 new connections is absorbed (as any burst is) once a request gets through.
    wait_until(lambda: one_worker.snapshot("BTC_USDT")[0] == 200, 10, what="the server past the burst")
    window_s = attack_started + DEADLINE_S - 1.0 - time.monotonic()
    assert window_s >= 5.0, f"the attack took {DEADLINE_S - 1.0 - window_s:.1f} s to open"

    # While every attack socket is held, the normal client is served.
    seen = normal_client(one_worker.port, window_s, timeout_s=5.0)
    assert attack.sending() == ATTACK_SOCKETS, "the attack was cut before the normal client was done"
    assert seen.errors == [] and set(seen.statuses) == {200}, (seen.statuses, seen.errors[:3])
    assert len(seen.ms) >= 200
    assert seen.p(99) < P99_LIMIT_MS, (
        f"{len(seen.ms)} requests: p50 {seen.p(50):.1f} ms, p99 {seen.p(99):.1f} ms"
    )

    # The short body is answered with a JSON error at the deadline, not held.
    waiter.join(DEADLINE_S + 5)
    elapsed, status, body = short["answer"]
    assert (status, body) == (408, {"status_code": 408, "error": "Request body not received within 12 s."})
    assert DEADLINE_S - 0.1 <= elapsed <= DEADLINE_S + 1.0
    # And so is every attack socket: none is held past the deadline.
    wait_until(lambda: attack.answered() == ATTACK_SOCKETS, 25, 0.05, what="every socket cut")
    assert time.monotonic() - attack_started <= DEADLINE_S + 20
    stats = attack.stop()
    assert (stats.answered, stats.closed_unanswered) == ({408: ATTACK_SOCKETS}, 0)


def post(server: Gunicorn, body: bytes, chunked: bool) -> tuple[int, Any]:
    """``POST /snapshot/BTC_USDT`` with a body sent whole or in chunks: (status, JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        if chunked:
            pieces = iter([body[i : i + 1000] for i in range(0, len(body), 1000)])
            conn.request("POST", "/snapshot/BTC_USDT", body=pieces, encode_chunked=True)
        else:
            conn.request("POST", "/snapshot/BTC_USDT", body=body)
        response = conn.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_that_come_at_once_are_read_as_before(gunicorn: Gunicorn, chunked: bool) -> None:
    status, body = post(gunicorn, b'{"max_age_ms": "soon"}', chunked)
    assert (status, body["status_code"]) == (400, 400)  # the body was read, and its error explained
    status, body = post(gunicorn, b'{"max_age_ms": 1' + b" " * 17_000 + b"}", chunked)
    assert (status, body["status_code"]) == (413, 413)


def test_a_body_short_of_its_length_is_a_408_at_the_default_deadline_of_5_s(gunicorn: Gunicorn) -> None:
    elapsed, status, body = short_body(gunicorn.port, declared=100, sent=b"{}")
    assert (status, body) == (408, {"status_code": 408, "error": "Request body not received within 5 s."})
    assert 4.9 <= elapsed <= 6.0
