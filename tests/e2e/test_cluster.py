"""Redis Cluster: the main paths through 3 primaries and 3 replicas, and a primary killed.

Real processes on free ports: a cluster (tests.cluster: ``redis-cli --cluster create``, node
timeout 1 s), the simulator (recording what it publishes), a messenger and gunicorn, both with
``REDIS_CLUSTER=1`` and REDIS_URL naming one node. The symbols asked for are chosen in buckets
(contract.keys) served by different primaries, so every path crosses slots and nodes:

- a snapshot, ``/snapshots`` of symbols on every primary, a symbol asked for the first time (the
  demand, a control key and its channel, on the control slot's node), live push (the messenger's
  PUBLISH, the server's hub), and ``/readyz``;
- SIGKILL of the primary serving BTCUSDT's bucket while a client polls every 20 ms: every answer
  is a 200 with a value the exchange published and that was current SNAPSHOT_TTL_MS + SLACK_MS
  before the request (tests.oracle), or a JSON 503 with Retry-After / 500 while the slot has no
  primary and the messenger rewrites; update ids never go back; 200s come back with no restart.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from contract.keys import CONTROL_TAG, snapshot_key
from tests.cluster import RedisClusterNodes, redis_cluster  # noqa: F401 (the fixture)
from tests.conftest import Started
from tests.e2e.test_sentinel import Poller, Stack, is_snapshot, judge
from tests.processes import EventStream, Gunicorn, Messenger, Simulator, http, messenger_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.messenger, pytest.mark.timeout(150)]

SNAPSHOT_TTL_MS = 400
RECOVERY_LIMIT_S = 20.0
PINNED = "btcusdt"


def streamed(url: str) -> bool:
    """Served from the stream: a symbol asked for the first time may be served from its REST seed
    first (Binance's REST bookTicker has no update id), until its first frame is written."""
    status, _, doc = http("POST", url)
    return status == 200 and doc["source"] == "stream"


def now_ms() -> int:
    return int(time.time() * 1000)


def spread(cluster: RedisClusterNodes, candidates: list[str]) -> list[str]:
    """One symbol of ``candidates`` per primary (by where its bookTicker key lives), BTCUSDT first."""
    chosen: dict[int, str] = {}
    for symbol in ["BTCUSDT", *candidates]:
        port = cluster.primary_for(snapshot_key("bookticker", symbol)).port
        chosen.setdefault(port, symbol)
    assert len(chosen) == 3, f"the candidates do not cover every primary: {chosen}"
    return list(chosen.values())


@pytest.fixture
def stack(started: Started, logs_dir: Path, redis_cluster: RedisClusterNodes) -> Stack:  # noqa: F811
    settings: dict[str, Any] = {"REDIS_CLUSTER": 1, "SNAPSHOT_TTL_MS": SNAPSHOT_TTL_MS}
    sim = started.add(Simulator(logs_dir, "--rate", "20", "--record"))
    messenger = started.add(Messenger(logs_dir, messenger_env(sim, redis_cluster.url, **settings), PINNED))
    server = started.add(Gunicorn(logs_dir, redis_cluster.url, **settings))
    wait_until(lambda: http("POST", f"{server.url}/snapshot/BTC_USDT")[0] == 200, 30, what="a 200")
    return Stack([], [], sim, messenger, server)


def test_the_main_paths_work_across_slots_and_nodes(stack: Stack, redis_cluster: RedisClusterNodes) -> None:  # noqa: F811
    url = stack.server.url
    candidates = ["ETHBTC", "BNBBTC", "LTCBTC", "XRPBTC", "ADABTC", "ETHUSDT", "BNBUSDT", "LTCUSDT"]
    symbols = spread(redis_cluster, candidates)
    control = redis_cluster.primary_for(CONTROL_TAG).port
    print(f"cluster: symbols {symbols} on primaries "
          f"{[redis_cluster.primary_for(snapshot_key('bookticker', s)).port for s in symbols]}, "
          f"control slot on {control}")  # fmt: skip

    # Ready once a heartbeat says the connection is live: a value may be served (from its REST
    # seed) before that, and the heartbeat is written every third of SNAPSHOT_TTL_MS.
    # (Each answer that is not is printed: shown if the test fails.)
    wait_until(lambda: (r := http("GET", f"{url}/readyz"))[0] == 200 or print(r), 10, what="/readyz 200")

    # Asked for (the others for the first time: on demand), then together: every value the simulator's.
    for symbol in symbols:
        path = f"{url}/snapshot/{symbol}"
        wait_until(partial(streamed, path), 15, what=f"{symbol} on demand, from the stream")
    names = ",".join(symbols)
    status, _, doc = http("POST", f"{url}/snapshots?symbols={names}")
    assert status == 200, doc
    assert [s["symbol"] for s in doc["snapshots"]] == symbols
    for snapshot in doc["snapshots"]:
        book = stack.sim.book(snapshot["symbol"])
        assert snapshot["update_id"] <= book["u"], (snapshot, book)

    # A value set now is served, and pushed live to a follower.
    stream = EventStream(f"{url}/stream/{symbols[1]}")
    try:
        stream.next(5, is_snapshot)
        sent = stack.sim.set_book(symbols[1], "1.23450000", "2.00000000", "1.23460000", "3.00000000")
        stream.next(5, lambda e: is_snapshot(e) and e["json"]["update_id"] >= sent["u"])
    finally:
        stream.close()


def test_killing_the_primary_of_a_symbols_slot_gives_503s_then_200s_never_stale(
    stack: Stack,
    redis_cluster: RedisClusterNodes,  # noqa: F811
) -> None:
    victim = redis_cluster.primary_for(snapshot_key("bookticker", PINNED))
    poller = Poller(stack.server.port)
    poller.start()
    try:
        wait_until(lambda: len(poller.answers) > 25, 5, what="the poller")
        killed_ms = now_ms()
        redis_cluster.kill(victim)
        promoted = redis_cluster.wait_failover(victim, 20)
        back_ms = wait_until(lambda: poller.back_since(killed_ms), RECOVERY_LIMIT_S, what="200s again")
        time.sleep(0.5)  # a few more 200s after the recovery
    finally:
        poller.stop()
    counts = judge(stack, poller)
    print(
        f"cluster: killed primary {victim.port} (replica {promoted.port} promoted); answers "
        f"{dict(sorted(counts.items()))}; 200s back {(back_ms - killed_ms) / 1000:.2f} s after the kill"
    )
    assert set(counts) - {200}, "the kill was not seen by the client"
    assert http("POST", f"{stack.server.url}/snapshot/BTC_USDT")[0] == 200
