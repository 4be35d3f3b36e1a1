"""One client floods both APIs with symbols nobody streams: the caps hold, everyone else is served."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis

from tests.conftest import Started
from tests.processes import (
    Gunicorn,
    Messenger,
    RedisServer,
    Simulator,
    http,
    symbol_list_loaded,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

CAP = 40
PINNED = "btcusdt@bookTicker"
FLOOD_S = 12.0
THREADS = 6
PER_REQUEST = 20
KINDS = ("bookTicker", "trade", "kline_1m", "ticker", "depth5", "aggTrade")


def on_demand_streams(sim: Simulator) -> tuple[int, list[list[str]]]:
    """(streams the exchange carries besides the pinned one, each connection's streams)."""
    layout = [list(s["streams"]) for s in sim.sessions()]
    return sum(len(streams) for streams in layout) - sum(PINNED in streams for streams in layout), layout


def refusals(server: Gunicorn, reason: str) -> float:
    """The server's count of requests refused for a reason, from /metrics."""
    sample = f'transmute_on_demand_refusals_total{{reason="{reason}"}} '
    lines = http("GET", f"{server.url}/metrics")[2].splitlines()
    return next((float(line[len(sample) :]) for line in lines if line.startswith(sample)), 0.0)


def flood_job(symbols: list[str], n: int) -> tuple[str, str, str, bytes | None]:
    """The n-th request of a flooding client: (api, method, path, body), over both APIs."""
    chunk = [symbols[(n * PER_REQUEST + i) % len(symbols)] for i in range(PER_REQUEST)]
    kind = KINDS[n % len(KINDS)]
    if n % 3 == 0:
        return "ours", "POST", "/snapshots", orjson.dumps({"symbols": chunk, "kind": kind})
    if n % 3 == 1:
        path = "/api/v3/ticker/bookTicker" if n % 2 else "/api/v3/ticker/24hr"
        return "binance", "GET", f"{path}?symbols={quote(orjson.dumps(chunk).decode())}", None
    return "binance", "GET", f"/api/v3/depth?symbol={chunk[0]}&limit=5", None


def test_a_flood_of_new_streams_is_refused_over_the_caps_and_the_pinned_symbol_never_lapses(
    sim: Simulator,
    messenger_factory: Callable[..., Messenger],
    started: Started,
    logs_dir: Path,
    redis_server: RedisServer,
    real_redis: redis.Redis,
) -> None:
    messenger_factory(sim, "btcusdt", DEMAND_MAX_STREAMS=CAP)
    server: Gunicorn = started.add(
        Gunicorn(logs_dir, redis_server.url, DEMAND_MAX_STREAMS=CAP, DEMAND_CLIENT_STREAMS_PER_S=10,
                 DEMAND_CLIENT_BURST=20)
    )  # fmt: skip
    symbol_list_loaded(real_redis)
    wait_until(lambda: server.snapshot("BTC_USDT")[0] == 200, 10, what="the pinned symbol")
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
    symbols = [s["symbol"] for s in info["symbols"] if s["status"] == "TRADING" and s["symbol"] != "BTCUSDT"]

    deadline = time.monotonic() + FLOOD_S
    answers: list[tuple[str, int, dict[str, str], Any]] = []
    pinned: list[int] = []
    carried: list[int] = []

    def flood(offset: int) -> None:
        for n in range(offset * 1000, offset * 1000 + 1000):
            if time.monotonic() > deadline:
                return
            api, method, path, body = flood_job(symbols, n)
            answers.append((api, *http(method, f"{server.url}{path}", body, timeout_s=10)))

    def poll_pinned() -> None:
        while time.monotonic() < deadline + 2.0:
            pinned.append(server.snapshot("BTC_USDT")[0])
            time.sleep(0.02)

    def watch_exchange() -> None:
        while time.monotonic() < deadline:
            carried.append(on_demand_streams(sim)[0])
            time.sleep(0.25)

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(THREADS)]
    threads += [threading.Thread(target=poll_pinned), threading.Thread(target=watch_exchange)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Over the caps, both APIs say so in their own shapes, and when to try again.
    refused = [(api, headers, body) for api, status, headers, body in answers if status == 429]
    assert {api for api, _, _ in refused} == {"ours", "binance"}
    for api, headers, body in refused:
        assert int(headers["Retry-After"]) >= 1
        if api == "ours":
            assert body["status_code"] == 429 and body["error"].startswith("Too many")
        else:
            assert body["code"] == -1003 and body["msg"].startswith("Too many")
    statuses = {status for _, status, _, _ in answers}
    assert statuses <= {200, 429, 503}, statuses
    assert 200 in statuses  # what was admitted is served

    # The exchange never carried more on demand than the cap, and the cap was reached.
    assert max(carried) <= CAP
    _, layout = wait_until(lambda: (n := on_demand_streams(sim))[0] == CAP and n, 5, what="the cap")
    assert [PINNED] in layout  # the pinned stream has a connection of its own

    # The pinned symbol was served every time it was asked, all through the flood.
    assert len(pinned) >= 200
    assert [s for s in pinned if s != 200] == []

    # Every refusal is counted, by reason; both reasons came up.
    by_reason = {reason: refusals(server, reason) for reason in ("cap", "client_rate")}
    assert sum(by_reason.values()) == len(refused)
    assert min(by_reason.values()) > 0, by_reason
