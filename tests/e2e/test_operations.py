"""Operating it: health, readiness, metrics of both processes, JSON logs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from contract.settings import Settings
from tests.processes import Gunicorn, Messenger, Simulator, free_port, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MessengerFactory = Callable[..., Messenger]


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus's text format (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and got == want:
            return float(value)
    return 0.0


def test_readiness_follows_the_messengers_heartbeat(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    assert http("GET", f"{gunicorn.url}/healthz")[:1] == (200,)
    status, _, body = http("GET", f"{gunicorn.url}/readyz")
    assert (status, body["reason"]) == (503, "no fresh messenger heartbeat")
    messenger = messenger_factory(sim, "btcusdt", "ethbtc")
    ready = wait_until(lambda: (r := http("GET", f"{gunicorn.url}/readyz"))[0] == 200 and r[2], 5)
    assert ready["status"] == "ready"
    ready = wait_until(lambda: (r := http("GET", f"{gunicorn.url}/readyz")[2])["fresh_share"] == 1.0 and r, 5)
    assert (ready["messenger"]["connections"], ready["messenger"]["tracked"]) == (1, 2)
    killed = time.monotonic()
    messenger.kill()
    wait_until(lambda: http("GET", f"{gunicorn.url}/readyz")[0] == 503, 5, what="the heartbeat to lapse")
    # Like the snapshots: within SNAPSHOT_TTL_MS (the default, 1 s) + 1 s of the messenger dying.
    assert time.monotonic() - killed <= Settings().snapshot_ttl_ms / 1000 + 1


def test_the_messengers_metrics_say_what_it_does(
    sim: Simulator, messenger_factory: MessengerFactory, real_redis: Any
) -> None:
    port = free_port()
    messenger_factory(sim, "btcusdt", "ethbtc", "--streams", "bookTicker,trade", METRICS_PORT=port)
    url = f"http://127.0.0.1:{port}/metrics"
    text = wait_until(lambda: (r := http("GET", url))[0] == 200 and "frames_total" in r[2] and r[2], 5)
    wait_until(
        lambda: sample(http("GET", url)[2], "transmute_messenger_frames_total", kind="bookTicker") > 10, 5
    )
    text = http("GET", url)[2]
    assert sample(text, "transmute_messenger_connections") == 1
    assert sample(text, "transmute_messenger_streams", connection="1") == 4
    assert sample(text, "transmute_messenger_redis_writes_total") > 0
    assert sample(text, "transmute_messenger_redis_batches_total") > 0
    # Alone, its records go as plain SETs after its first batches (messenger.sole_writer), never refused.
    wait_until(lambda: sample(http("GET", url)[2], "transmute_messenger_redis_sole_writes_total") > 0, 5)
    assert sample(text, "transmute_messenger_redis_sole_refused_total") == 0
    assert sample(text, "transmute_messenger_redis_up") == 1
    assert sample(text, "transmute_messenger_frame_to_redis_seconds_count") > 0
    assert sample(text, "transmute_messenger_tracked_keys") == 4
    assert "\ntransmute_messenger_heap_frozen_objects " in text  # 0 until 10 s after the start
    sim.fault("drop")
    wait_until(
        lambda: sample(http("GET", url)[2], "transmute_messenger_reconnects_total", reason="dropped") == 1, 5
    )
    sim.market(quiet=["BTCUSDT", "ETHBTC"])  # silence: the messenger pings to know it is alive
    wait_until(lambda: sample(http("GET", url)[2], "transmute_messenger_control_messages_total") >= 2, 5)


def test_the_servers_metrics_add_up_every_worker(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger_factory(sim, "btcusdt")
    symbol_list_loaded(real_redis)
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == 200, 5)
    before = http("GET", f"{gunicorn.url}/metrics")[2]
    route = "/snapshot/<symbol>"
    start = sample(before, "transmute_http_requests_total", method="POST", route=route, status="200")
    for _ in range(40):  # spread over both workers
        assert gunicorn.snapshot("BTCUSDT")[0] == 200
    after = http("GET", f"{gunicorn.url}/metrics")[2]
    assert (
        sample(after, "transmute_http_requests_total", method="POST", route=route, status="200") == start + 40
    )
    assert sample(after, "transmute_http_request_duration_seconds_count", route=route) >= start + 40
    gunicorn.snapshot("DOGE_BTC")  # not streamed: asked for on demand
    assert sample(http("GET", f"{gunicorn.url}/metrics")[2], "transmute_on_demand_spawns_total",
                  kind="bookticker") >= 1  # fmt: skip


def test_json_logs_are_one_object_a_line(
    sim: Simulator, messenger_factory: MessengerFactory, real_redis: Any
) -> None:
    messenger = messenger_factory(sim, "btcusdt", LOG_FORMAT="json")
    wait_until(lambda: "frames/s" in messenger.log(), 5)
    sim.fault("drop")
    wait_until(lambda: "reconnecting" in messenger.log(), 5)
    lines = [json.loads(line) for line in messenger.log().splitlines()]
    assert all(set(line) >= {"time", "level", "logger", "message"} for line in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines)
    assert any("reconnecting in" in line["message"] and line["level"] == "WARNING" for line in lines)
