"""Redis Sentinel: the primary killed five times while a client polls; 503s, then 200s, never stale.

Real processes on free ports: a primary and a replica (redis-server), three ``redis-sentinel``
watching them (quorum 2, a primary silent for DOWN_AFTER_MS is down), the simulator (recording
what it publishes), a messenger and gunicorn, both finding the primary through the sentinels
(REDIS_SENTINELS). A client polls ``POST /snapshot/BTC_USDT`` every 20 ms. Each round SIGKILLs
the primary, waits for the sentinels to promote the replica and for 200s to come back, then
restarts the killed one as the new primary's replica, ready for the next round. Neither the
messenger nor the server is restarted.

Asserted over all answers: every error while no primary answers is a JSON 503 with Retry-After
(or a 500 for a moment after the promotion, until the messenger's full rewrite lands: the
promoted replica holds no live voucher, see README "High availability"); every 200 is a value
the exchange published and that was still current SNAPSHOT_TTL_MS + SLACK_MS before the request
(the freshness rule of the chaos test; in practice milliseconds); update ids never go back.
The time from each kill until 200s are back is printed (median and worst of the five). After the
five, pub/sub still works through the last primary: a symbol asked for the first time is served
(demand), and live push delivers updates. A second test asks the sentinels for a failover
(``SENTINEL FAILOVER``) with the primary alive, and judges the answers the same way.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Started
from tests.oracle import Published
from tests.processes import (
    EventStream,
    Gunicorn,
    Messenger,
    RedisSentinel,
    RedisServer,
    Simulator,
    http,
    messenger_env,
    replica_ready,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(150)]

SERVICE = "transmute"
SNAPSHOT_TTL_MS = 400
# At least twice SNAPSHOT_TTL_MS: no voucher the replica copied is still alive when it is promoted.
DOWN_AFTER_MS = 800
FAILOVER_TIMEOUT_MS = 1500
FAILOVERS = 5
POLL_INTERVAL_S = 0.02
SLACK_MS = 500
BOUND_MS = SNAPSHOT_TTL_MS + SLACK_MS
RECOVERY_LIMIT_S = 15.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Answer:
    asked_ms: int
    answered_ms: int
    status: int  # 0: no answer at all
    doc: Any
    retry_after: str | None


class Poller:
    """One client asking for BTC_USDT every POLL_INTERVAL_S on a keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._conn: HTTPConnection | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._conn is not None:
            self._conn.close()

    def _ask(self) -> Answer:
        asked = now_ms()
        for _ in range(2):  # a keep-alive connection the server closed: once more on a new one
            if self._conn is None:
                self._conn = HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                self._conn.request("POST", "/snapshot/BTC_USDT")
                response = self._conn.getresponse()
                raw = response.read()
            except (OSError, HTTPException):
                self._conn.close()
                self._conn = None
                continue
            doc = orjson.loads(raw) if raw else None
            return Answer(asked, now_ms(), response.status, doc, response.getheader("Retry-After"))
        return Answer(asked, now_ms(), 0, None, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.answers.append(self._ask())
            self._stop.wait(max(0.0, POLL_INTERVAL_S - (time.monotonic() - started)))

    def back_since(self, since_ms: int) -> int | None:
        """When the first of five 200s in a row was asked for, after a failure asked for after
        ``since_ms`` (None: not yet)."""
        answers = [a for a in list(self.answers) if a.asked_ms >= since_ms]
        failed = [i for i, a in enumerate(answers) if a.status != 200]
        if not failed:
            return None
        tail = answers[failed[-1] + 1 :]
        return tail[0].asked_ms if len(tail) >= 5 else None


@dataclass(slots=True)
class Stack:
    nodes: list[RedisServer]  # [primary, replica] at the start
    sentinels: list[RedisSentinel]
    sim: Simulator
    messenger: Messenger
    server: Gunicorn


def primary_port(sentinels: list[RedisSentinel]) -> int | None:
    """The primary all sentinels agree on (None while any of them knows none)."""
    seen = {s.primary() for s in sentinels}
    only = seen.pop() if len(seen) == 1 else None
    return None if only is None else only[1]


@pytest.fixture
def stack(started: Started, logs_dir: Path) -> Stack:
    primary = started.add(RedisServer(logs_dir))
    replica = started.add(RedisServer(logs_dir, "--replicaof", "127.0.0.1", str(primary.port)))
    sentinels = [
        started.add(
            RedisSentinel(
                logs_dir,
                primary.port,
                SERVICE,
                down_after_ms=DOWN_AFTER_MS,
                failover_timeout_ms=FAILOVER_TIMEOUT_MS,
            )
        )
        for _ in range(3)
    ]
    # Sentinels find each other through the primary (a hello every 2 s), and the replica from its INFO.
    wait_until(lambda: all(s.others() == 2 for s in sentinels), 20, what="the sentinels to know each other")
    wait_until(lambda: replica_ready(primary, replica, sentinels), 20, what="the replica")
    addresses = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    # REDIS_URL's host is not used with REDIS_SENTINELS: a port nobody listens on proves it.
    settings: dict[str, Any] = {
        "REDIS_SENTINELS": addresses,
        "REDIS_SENTINEL_SERVICE": SERVICE,
        "SNAPSHOT_TTL_MS": SNAPSHOT_TTL_MS,
    }
    unused = "redis://127.0.0.1:1/0"
    sim = started.add(Simulator(logs_dir, "--rate", "20", "--record"))
    messenger = started.add(Messenger(logs_dir, messenger_env(sim, unused, **settings), "btcusdt"))
    server = started.add(Gunicorn(logs_dir, unused, **settings))
    return Stack([primary, replica], sentinels, sim, messenger, server)


def failover(stack: Stack, poller: Poller) -> tuple[float, float]:
    """Kill the primary; wait for the promotion and for 200s; bring the killed one back as a
    replica. Returns the seconds from the kill until 200s were back, and until the last 503."""
    port = primary_port(stack.sentinels)
    [old] = [n for n in stack.nodes if n.port == port]
    [new] = [n for n in stack.nodes if n is not old]
    killed_ms = now_ms()
    old.kill()
    wait_until(lambda: primary_port(stack.sentinels) == new.port, 15, what="the promotion")
    back_ms = wait_until(lambda: poller.back_since(killed_ms), RECOVERY_LIMIT_S, what="200s again")
    old.argv = [*old.argv, "--replicaof", "127.0.0.1", str(new.port)]
    old.start()
    wait_until(lambda: replica_ready(new, old, stack.sentinels), 20, what="the old primary to replicate")
    no_primary = [a.asked_ms for a in poller.answers if killed_ms <= a.asked_ms < back_ms and a.status == 503]
    last_503 = max(no_primary, default=killed_ms)
    return (back_ms - killed_ms) / 1000, (last_503 - killed_ms) / 1000


Rounds = list[tuple[float, float]]  # per failover: seconds until 200s were back, until the last 503


def polled(stack: Stack, rounds: Callable[[Poller], Rounds]) -> tuple[Poller, Rounds]:
    """Poll all along ``rounds`` (and half a second after)."""
    wait_until(lambda: http("POST", f"{stack.server.url}/snapshot/BTC_USDT")[0] == 200, 20, what="a 200")
    poller = Poller(stack.server.port)
    poller.start()
    try:
        wait_until(lambda: len(poller.answers) > 25, 5, what="the poller")
        done = rounds(poller)
        time.sleep(0.5)  # a few more 200s after the last round
    finally:
        poller.stop()
    return poller, done


def judge(stack: Stack, poller: Poller) -> dict[int, int]:
    """Assert what every answer must be (see the module's docstring); returns the count by status."""
    published = Published(stack.sim)
    published.pull()
    assert published.lost == 0, "the record lost entries: the oracle cannot judge"
    timeline = published.timeline
    counts: dict[int, int] = {}
    for answer in poller.answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    assert set(counts) <= {200, 500, 503}, counts
    for answer in poller.answers:
        if answer.status == 503:
            assert answer.retry_after == "1"
            assert answer.doc["status_code"] == 503
        elif answer.status == 500:
            assert answer.doc["status_code"] == 500

    stale, worst, last_id = [], 0, 0
    for answer in poller.answers:
        if answer.status != 200:
            continue
        doc = answer.doc
        # A REST seed has no id (Binance's bookTicker over REST has none): judged by its content only.
        if doc["update_id"] is not None:
            assert doc["update_id"] >= last_id, f"update id went back: {last_id} -> {doc['update_id']}"
            last_id = doc["update_id"]
        content = (doc["bid_price"], doc["bid_quantity"], doc["ask_price"], doc["ask_quantity"])
        verdict = timeline.judge("btcusdt@bookTicker", doc["update_id"], content, answer.asked_ms,
                                 answer.answered_ms)  # fmt: skip
        assert verdict.sent, f"{doc} was never published"
        worst = max(worst, verdict.stale_ms)
        if verdict.stale_ms > BOUND_MS:
            stale.append(f"update {doc['update_id']} superseded {verdict.stale_ms} ms before")
    print(f"sentinel: {counts.get(200, 0)} values judged, worst staleness {worst} ms")
    assert not stale, stale[:10]
    assert stack.messenger.running() and stack.server.running()
    assert "down-after-milliseconds" not in stack.messenger.log()  # the settings follow the rule
    return counts


def test_killing_the_primary_gives_503s_then_200s_never_a_stale_or_older_value(stack: Stack) -> None:
    poller, rounds = polled(stack, lambda p: [failover(stack, p) for _ in range(FAILOVERS)])
    counts = judge(stack, poller)
    outages = [outage for outage, _ in rounds]
    print(
        f"sentinel: {FAILOVERS} failovers, answers {dict(sorted(counts.items()))}; 200s back after "
        f"median {statistics.median(outages):.2f} s, worst {max(outages):.2f} s; per failover, "
        f"last 503 / 200s back (s): {', '.join(f'{n:.2f}/{o:.2f}' for o, n in rounds)}"
    )
    assert counts.get(503, 0) >= FAILOVERS  # each failover was seen by the client

    # Pub/sub follows the failovers too: a symbol asked for the first time (demand, published to
    # the messenger), and live push (the messenger publishes, the server's hub listens).
    assert http("POST", f"{stack.server.url}/snapshot/ETH_BTC")[0] == 200
    stream = EventStream(f"{stack.server.url}/stream/BTC_USDT")
    try:
        first = stream.next(5, is_snapshot)["json"]["update_id"]
        stream.next(5, lambda e: is_snapshot(e) and e["json"]["update_id"] > first)
    finally:
        stream.close()


def test_a_failover_asked_for_demotes_a_live_primary_and_everything_is_rewritten(stack: Stack) -> None:
    """``SENTINEL FAILOVER``: the old primary lives on, taking writes until the sentinels make it a
    replica and close its clients' connections; redis-py then reconnects to the new primary without
    an error. The messenger must still rewrite everything there (messenger.writer), and no client
    sees a stale value or an update id going back."""
    port = primary_port(stack.sentinels)
    [old] = [n for n in stack.nodes if n.port == port]

    def demoted() -> bool:
        with old.client() as client:
            return bool(client.info("replication")["role"] == "slave")

    def asked(poller: Poller) -> Rounds:
        started_ms = now_ms()
        with stack.sentinels[0].client() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
        wait_until(lambda: primary_port(stack.sentinels) not in (None, port), 15, what="the switch")
        wait_until(demoted, 30, what="the old primary to be made a replica")
        # The writer's connection was closed under it (a failed write), or it found it made anew.
        log = stack.messenger.log
        wait_until(lambda: "write failed" in log() or "rewriting everything" in log(), 10, what="the rewrite")
        rewritten_ms = now_ms()
        wait_until(lambda: _steady(poller), 10, what="200s")
        return [((rewritten_ms - started_ms) / 1000, 0.0)]

    poller, [(rewritten_s, _)] = polled(stack, asked)
    counts = judge(stack, poller)
    print(f"sentinel: a failover asked for: answers {dict(sorted(counts.items()))}, "
          f"rewritten {rewritten_s:.1f} s after it was asked for")  # fmt: skip


def _steady(poller: Poller) -> bool:
    """The last second's answers (at least 20) were all 200s."""
    recent = [a for a in list(poller.answers) if a.asked_ms >= now_ms() - 1000]
    return len(recent) >= 20 and all(a.status == 200 for a in recent)


def is_snapshot(event: dict[str, Any]) -> bool:
    return event.get("event") == "snapshot"
