"""The messenger's health check on its metrics port: what compose's healthcheck asks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Started
from tests.processes import Messenger, Simulator, free_port, http, messenger_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def test_the_messengers_health_is_200_only_while_it_has_a_live_connection(
    started: Started, logs_dir: Path, redis_server: Any, real_redis: Any
) -> None:
    sim = Simulator(logs_dir, "--rate", "20")  # not started yet: nothing to connect to
    port = free_port()
    env = messenger_env(sim, redis_server.url, METRICS_PORT=port)
    started.add(Messenger(logs_dir, env, "btcusdt"))
    health, metrics = f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: http("GET", metrics)[0] == 200, 10, what="the metrics port")
    assert http("GET", health)[::2] == (503, {"live_connections": 0})

    started.add(sim)
    wait_until(lambda: http("GET", health)[0] == 200, 10, what="a live connection")
    assert http("GET", health)[2] == {"live_connections": 1}
    assert "transmute_messenger_connections 1.0" in http("GET", metrics)[2]

    sim.stop()
    wait_until(lambda: http("GET", health)[0] == 503, 5, what="the connection to be gone")
    assert http("GET", health)[2] == {"live_connections": 0}
