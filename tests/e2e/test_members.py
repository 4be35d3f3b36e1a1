"""Several messengers on one Redis are one service: each stream is owned by REPLICAS members,
a killed member's streams move to the others, a member joining or leaving cleanly moves
streams make before break.

Real processes: redis-server, the simulator, messengers (members) and gunicorn; a client polls
the pinned symbols every 20 ms and records every answer.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import redis

from contract.keys import member_streams_key, snapshot_key
from contract.members import heartbeats, live_members
from tests.conftest import Started
from tests.processes import Gunicorn, Messenger, Simulator, http, messenger_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(180)]

SYMBOLS = ["BTCUSDT", "ETHBTC", "BNBBTC", "LTCBTC", "ETHUSDT", "BNBUSDT"]
LIVENESS_MS = 1500
SETTINGS = {"LIVENESS_TIMEOUT_MS": LIVENESS_MS, "SNAPSHOT_TTL_MS": 500}


def carriers(client: redis.Redis, symbols: list[str] = SYMBOLS) -> dict[str, list[str]]:
    """Each symbol's bookTicker -> the live members that stream it."""
    members = live_members(client)
    pipe = client.pipeline(transaction=False)
    for member in members:
        pipe.hkeys(member_streams_key(member))
    held = {m: {k.decode() for k in keys} for m, keys in zip(members, pipe.execute(), strict=True)}
    return {s: [m for m in members if snapshot_key("bookticker", s) in held[m]] for s in symbols}


def spread(client: redis.Redis, members: int, replicas: int = 1) -> bool:
    """``members`` live members, each symbol carried by exactly ``replicas`` of them."""
    found = carriers(client)
    return len(live_members(client)) == members and all(len(m) == replicas for m in found.values())


class Poller:
    """Asks for every symbol every 20 ms on one keep-alive connection; keeps (time, symbol, status)."""

    def __init__(self, server: Gunicorn, symbols: list[str]) -> None:
        self.answers: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server.port, symbols), daemon=True)
        self._thread.start()

    def _run(self, port: int, symbols: list[str]) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=5)
        while not self._stop.is_set():
            for symbol in symbols:
                conn.request("POST", f"/snapshot/{symbol}")
                response = conn.getresponse()
                response.read()
                self.answers.append((time.monotonic(), symbol, response.status))
            self._stop.wait(0.02)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def outages(self, since: float = 0.0) -> dict[str, float]:
        """Per symbol, the longest run of answers other than 200 (seconds, first to next 200)."""
        longest: dict[str, float] = {}
        started: dict[str, float] = {}
        for at, symbol, status in self.answers:
            if at < since:
                continue
            if status != 200:
                started.setdefault(symbol, at)
            elif symbol in started:
                longest[symbol] = max(longest.get(symbol, 0.0), at - started.pop(symbol))
        now = time.monotonic()
        for symbol, at in started.items():  # still failing
            longest[symbol] = max(longest.get(symbol, 0.0), now - at)
        return longest

    def failures(self) -> Counter[int]:
        return Counter(status for _, _, status in self.answers if status != 200)


@pytest.fixture
def member(started: Started, logs_dir: Path, redis_server: Any, sim: Simulator) -> Callable[..., Messenger]:
    """Start one more member pinning SYMBOLS."""

    def make(*args: str, **settings: Any) -> Messenger:
        env = messenger_env(sim, redis_server.url, **{**SETTINGS, **settings})
        started_member: Messenger = started.add(Messenger(logs_dir, env, *(args or tuple(SYMBOLS))))
        return started_member

    return make


def all_served(gunicorn: Gunicorn) -> bool:
    return all(gunicorn.snapshot(s)[0] == 200 for s in SYMBOLS)


def test_three_members_carry_each_pinned_stream_once_and_a_killed_ones_move_within_the_liveness_timeout(
    member: Callable[..., Messenger], real_redis: redis.Redis, gunicorn: Gunicorn
) -> None:
    members = [member() for _ in range(3)]
    wait_until(lambda: spread(real_redis, 3), 20, what="each stream on exactly one of 3 members")
    wait_until(lambda: all_served(gunicorn), 10, what="every symbol served")

    def settled() -> Any:
        status, _, body = http("GET", f"{gunicorn.url}/readyz")
        beats = body.get("members", [])
        return status == 200 and len(beats) == 3 and sum(b["streams_wanted"] for b in beats) == len(SYMBOLS)

    wait_until(settled, 10, what="/readyz: 3 members, each symbol carried once")

    # The member carrying the most symbols dies without a word.
    owner = Counter(m[0] for m in carriers(real_redis).values()).most_common(1)[0][0]
    pids = {beat["member"]: beat["pid"] for beat in heartbeats(real_redis)[1]}
    victim = next(m for m in members if m.proc is not None and m.proc.pid == pids[owner])
    orphans = [s for s, m in carriers(real_redis).items() if m == [owner]]
    poller = Poller(gunicorn, SYMBOLS)
    time.sleep(0.3)  # answers from before the kill
    killed_at = time.monotonic()
    victim.kill()
    wait_until(lambda: spread(real_redis, 2), LIVENESS_MS / 1000 + 5, what="its streams to move")
    wait_until(lambda: all_served(gunicorn), 5, what="every symbol served again")
    time.sleep(0.3)
    poller.stop()
    outages = poller.outages(killed_at)
    print(f"killed member's symbols {orphans}: longest outage per symbol (s) {outages}")
    assert set(outages) <= set(orphans), f"only the killed member's symbols fail: {outages}"
    assert max(outages.values(), default=0.0) <= LIVENESS_MS / 1000 + 1.0, outages
    assert wait_until(lambda: http("GET", f"{gunicorn.url}/readyz")[0] == 200, 5)


def test_with_two_replicas_a_killed_member_costs_no_answer_but_a_200(
    member: Callable[..., Messenger], real_redis: redis.Redis, gunicorn: Gunicorn
) -> None:
    """REPLICAS=2: every record names the vouchers of both members that carry it, so SIGKILL of
    one leaves every symbol served by the other, while it happens and after."""
    members = [member(REPLICAS=2) for _ in range(3)]
    wait_until(lambda: spread(real_redis, 3, replicas=2), 20, what="each stream on exactly 2 of 3 members")
    wait_until(lambda: all_served(gunicorn), 10, what="every symbol served")
    owner = Counter(m for ms in carriers(real_redis).values() for m in ms).most_common(1)[0][0]
    pids = {beat["member"]: beat["pid"] for beat in heartbeats(real_redis)[1]}
    victim = next(m for m in members if m.proc is not None and m.proc.pid == pids[owner])
    poller = Poller(gunicorn, SYMBOLS)
    time.sleep(0.3)  # answers from before the kill
    victim.kill()
    wait_until(lambda: spread(real_redis, 2, replicas=2), LIVENESS_MS / 1000 + 5, what="2 replicas again")
    time.sleep(SETTINGS["SNAPSHOT_TTL_MS"] / 1000 + 0.5)  # past the dead member's vouchers' TTL
    poller.stop()
    answers = len(poller.answers)
    print(f"REPLICAS=2, SIGKILL of the member carrying most: {answers} answers, non-200: {poller.failures()}")
    assert answers > 50 and not poller.failures(), poller.failures()


def test_scaling_from_one_member_to_three_and_back_with_sigterm_answers_no_500(
    member: Callable[..., Messenger], real_redis: redis.Redis, gunicorn: Gunicorn
) -> None:
    first = member()
    wait_until(lambda: spread(real_redis, 1), 15, what="one member carrying everything")
    wait_until(lambda: all_served(gunicorn), 10, what="every symbol served")
    poller = Poller(gunicorn, SYMBOLS)
    time.sleep(0.3)
    joined = [member(), member()]
    wait_until(lambda: spread(real_redis, 3), 20, what="the streams spread over 3 members")
    time.sleep(1.0)  # the old owners let go
    for leaving in joined:
        leaving.signal(signal.SIGTERM)
        assert leaving.proc is not None
        leaving.proc.wait(15)
        assert leaving.proc.returncode == 0
    wait_until(lambda: spread(real_redis, 1), 10, what="one member carrying everything again")
    time.sleep(1.0)
    poller.stop()
    assert first.running()
    assert len(poller.answers) > 100
    assert poller.failures() == Counter(), poller.outages()


def test_all_with_three_member_processes_and_two_replicas_owns_each_stream_exactly_twice(
    started: Started, logs_dir: Path, redis_server: Any, real_redis: redis.Redis, sim_factory: Any
) -> None:
    quiet = sim_factory("--rate", "1")
    env = messenger_env(quiet, redis_server.url, REPLICAS=2, **SETTINGS)
    started.add(Messenger(logs_dir, env, "--all", "--processes", "3"))
    trading = wait_until(lambda: real_redis.hlen("transmute:symbols"), 15, what="the symbol list")
    assert trading

    def owned_twice() -> Any:
        members = live_members(real_redis)
        if len(members) != 3:
            return False
        pipe = real_redis.pipeline(transaction=False)
        for m in members:
            pipe.hkeys(member_streams_key(m))
        counts = Counter(k for keys in pipe.execute() for k in keys)
        return len(counts) > 1000 and set(counts.values()) == {2} and counts

    counts = wait_until(owned_twice, 60, interval_s=0.5, what="every stream owned by exactly 2 members")
    statuses = [v for v in real_redis.hvals("transmute:symbols") if v == b"TRADING"]
    assert len(counts) == len(statuses)


def test_a_demand_is_taken_by_its_owner_only_and_served_at_the_first_request(
    member: Callable[..., Messenger], real_redis: redis.Redis, gunicorn: Gunicorn
) -> None:
    for _ in range(3):
        member(SYMBOLS[0])
    wait_until(lambda: len(live_members(real_redis)) == 3, 15, what="3 members")
    wait_until(lambda: gunicorn.snapshot(SYMBOLS[0])[0] == 200, 10, what="the pinned symbol served")
    # Ready: the symbol list is loaded and every member sees the same members (until then a
    # demand may rightly be a 503, "try again shortly").
    wait_until(lambda: http("GET", f"{gunicorn.url}/readyz")[0] == 200, 10, what="/readyz 200")
    asked = ["XRPBTC", "ADABTC", "TRXBTC", "DOGEUSDT", "SOLUSDT"]
    for symbol in asked:
        assert gunicorn.snapshot(symbol)[0] == 200, symbol  # within DEMAND_WAIT_MS

    def once() -> Any:
        found = carriers(real_redis, asked)
        return all(len(m) == 1 for m in found.values()) and found

    found = wait_until(once, 5, what="each asked-for symbol carried by exactly one member")
    assert len({m[0] for m in found.values()}) > 1, f"spread over the members: {found}"


def test_what_any_member_pins_is_carried_by_its_owners_whoever_pinned_it(
    member: Callable[..., Messenger], real_redis: redis.Redis, gunicorn: Gunicorn
) -> None:
    member(*SYMBOLS[:3])
    member(*SYMBOLS[3:])
    wait_until(lambda: spread(real_redis, 2), 20, what="each pinned symbol on exactly one of 2 members")
    wait_until(lambda: all_served(gunicorn), 10, what="every symbol served")
