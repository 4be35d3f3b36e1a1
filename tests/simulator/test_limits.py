"""The simulator counts Binance's limits per client IP and records every violation."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.client import HTTPConnection
from typing import Any

import pytest
import websocket

from simulator.limits import IN_FLIGHT_GRACE_S
from tests.processes import Simulator, http

SimFactory = Callable[..., Simulator]


def get_from(sim: Simulator, source_ip: str, path: str) -> int:
    """GET ``path`` from a given loopback address; the status."""
    conn = HTTPConnection("127.0.0.1", sim.port, timeout=5, source_address=(source_ip, 0))
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def violations(sim: Simulator) -> dict[str, Any]:
    """``GET /_sim/violations``."""
    report: dict[str, Any] = sim.control("GET", "violations")
    return report


def test_connection_attempts_past_the_window_are_violations_of_that_ip(sim_factory: SimFactory) -> None:
    sim = sim_factory("--max-connections", "2")
    opened = [websocket.create_connection(f"{sim.ws_url}/ws", timeout=5) for _ in range(2)]
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"{sim.ws_url}/ws", timeout=5)
    for ws in opened:
        ws.close()
    report = violations(sim)
    assert report["total"] == 1
    assert report["by_ip"]["127.0.0.1"]["connections"] == 1
    assert report["peak"]["connections"] == {"127.0.0.1": 2}
    assert report["events"][0]["kind"] == "connections"


def test_rest_weight_is_counted_per_ip(sim_factory: SimFactory) -> None:
    sim = sim_factory("--rest-weight-limit", "30")
    assert get_from(sim, "127.0.0.1", "/api/v3/exchangeInfo") == 200  # weight 20
    assert get_from(sim, "127.0.0.2", "/api/v3/exchangeInfo") == 200  # another IP: its own minute
    assert get_from(sim, "127.0.0.1", "/api/v3/exchangeInfo") == 429  # 41 of 30 (a ping at start)
    report = violations(sim)
    assert report["by_ip"] == {"127.0.0.1": {"connections": 0, "weight": 1, "retry_after": 0}}
    assert report["peak"]["weight"] == {"127.0.0.1": 41, "127.0.0.2": 20}


def test_calling_before_a_retry_after_ends_is_a_violation_past_the_in_flight_grace(sim: Simulator) -> None:
    sim.fault("rest_429", count=1, retry_after_s=10)
    assert http("GET", f"{sim.rest_url}/api/v3/ping")[0] == 429
    assert http("GET", f"{sim.rest_url}/api/v3/ping")[0] == 200  # may have been on its way
    assert violations(sim)["total"] == 0
    time.sleep(IN_FLIGHT_GRACE_S + 0.1)  # the rule is about time: past the grace, a call is not in flight
    assert get_from(sim, "127.0.0.2", "/api/v3/ping") == 200  # another IP was not told to wait
    assert violations(sim)["total"] == 0
    assert http("GET", f"{sim.rest_url}/api/v3/ping")[0] == 200
    report = violations(sim)
    assert report["by_ip"]["127.0.0.1"]["retry_after"] == 1
    assert "before Retry-After ended" in report["events"][-1]["detail"]
