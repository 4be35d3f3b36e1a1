"""Three messengers behind one address share one Binance budget (messenger/egress.py).

The simulator sees every member from 127.0.0.1: one IP, Binance's limits counted for it
(simulator/limits.py), each violation recorded. Its limits are lowered (40 connection attempts
per 6 s, 150 weight a minute) and the members' shared budget set to 90 % of them, so that three
members starting ``--all`` together need more connections than one window allows, as 3 x 100
connections would on Binance, and their reconnects more REST weight (seeds) than a minute allows:
alone, each member's own pacing would overrun them; together, they wait for the window to roll.
Without membership every member carries every symbol: what is tested here is the budget, not who
carries what.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from simulator.config import EXCHANGE_INFO_FIXTURE
from simulator.limits import IN_FLIGHT_GRACE_S
from tests.processes import Gunicorn, Messenger, Simulator, free_port, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

SimFactory = Callable[..., Simulator]
MessengerFactory = Callable[..., Messenger]

SYMBOLS = 60
PER_CONNECTION = 4  # 15 connections a member, 45 for three: more than one window's 40
SIM_CONNECTIONS, WINDOW_S, SIM_WEIGHT = 40, 6, 150
RETRY_AFTER_S = 6
BUDGET = {
    "EGRESS_CONNECTIONS": 36,
    "EGRESS_CONNECTION_WINDOW_S": WINDOW_S,
    "MAX_STREAMS_PER_CONNECTION": PER_CONNECTION,
}


def small_exchange(tmp_path: Path) -> tuple[Path, list[str]]:
    """An exchangeInfo of the recording's first SYMBOLS trading symbols."""
    doc = orjson.loads(EXCHANGE_INFO_FIXTURE.read_bytes())
    doc["symbols"] = [s for s in doc["symbols"] if s["status"] == "TRADING"][:SYMBOLS]
    path = tmp_path / "exchangeInfo.json"
    path.write_bytes(orjson.dumps(doc))
    return path, [s["symbol"] for s in doc["symbols"]]


def violations(sim: Simulator) -> dict[str, Any]:
    """What the simulator recorded of clients going past Binance's limits."""
    report: dict[str, Any] = sim.control("GET", "violations")
    return report


def cut_off(sim: Simulator) -> list[Any]:
    """Connections the exchange closed or found breaking a per-connection rule (message rate...)."""
    state = sim.state()
    return [c["violations"] for c in state["closed"] + state["sessions"] if c["violations"]]


def metric(text: str, name: str) -> float:
    """One sample's value from a Prometheus text page (0 when absent)."""
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0]) if found else 0.0


def serving(gunicorn: Gunicorn, symbols: list[str]) -> bool:
    """Whether every symbol answers 200."""
    return all(gunicorn.snapshot(s)[0] == 200 for s in symbols)


def drop_all(sim: Simulator) -> set[int]:
    """Drop every open connection (no close frame); returns their ids once all are gone."""
    dropped = set(sim.fault("drop")["sessions"])
    wait_until(lambda: not dropped & {s["id"] for s in sim.sessions()}, 5, what="every connection dropped")
    return dropped


Team = tuple[Simulator, list[Messenger], list[str]]


@pytest.fixture
def team_factory(
    tmp_path: Path,
    sim_factory: SimFactory,
    messenger_factory: MessengerFactory,
    real_redis: redis.Redis,
) -> Callable[[int], Team]:
    """Three members starting ``--all`` at once against one simulator (``weight`` a minute allowed,
    90 % of it the members' budget) and one Redis."""

    def make(weight: int) -> Team:
        info, symbols = small_exchange(tmp_path)
        sim = sim_factory(
            "--exchange-info", str(info), "--rate", "2",
            "--max-connections", str(SIM_CONNECTIONS), "--connection-window", str(WINDOW_S),
            "--rest-weight-limit", str(weight),
        )  # fmt: skip
        budget = {**BUDGET, "EGRESS_REST_WEIGHT": weight * 9 // 10}
        # REPLICAS=3: every member carries every stream (members of one service share the streams
        # out otherwise), so three of them need three times the connections of one.
        members = [
            messenger_factory(sim, "--all", METRICS_PORT=free_port(), REPLICAS=3, **budget) for _ in range(3)
        ]
        symbol_list_loaded(real_redis)
        return sim, members, symbols

    return make


@pytest.fixture
def team(team_factory: Callable[[int], Team]) -> Team:
    """Three members, 150 weight a minute allowed (135 theirs)."""
    return team_factory(SIM_WEIGHT)


def all_in(sim: Simulator, gunicorn: Gunicorn, symbols: list[str]) -> None:
    """Wait until every symbol is served and every member carries all of them (15 connections)."""
    wait_until(lambda: serving(gunicorn, symbols), 3 * WINDOW_S, 0.2, "every symbol served")
    wait_until(lambda: len(sim.sessions()) == 45, 3 * WINDOW_S, 0.2, "every member's 15 connections")


def test_three_members_starting_all_at_once_share_one_budget_and_break_no_limit(
    team: Team, gunicorn: Gunicorn
) -> None:
    sim, members, symbols = team
    all_in(sim, gunicorn, symbols)
    report = violations(sim)
    assert report["total"] == 0, report["events"]
    assert cut_off(sim) == []
    assert sim.state()["rejected_connections"] == 0
    # The exchange's window may hold one or two more than the budget's: an attempt is counted by
    # the budget when taken and by the exchange when it arrives. That is what the margin is for.
    assert report["peak"]["connections"]["127.0.0.1"] <= SIM_CONNECTIONS
    # The budget did hold them back: one window could not take them all.
    assert any("connection budget of egress" in m.log() for m in members)
    # Each member's metrics show the shared budget: all together took 45 connections.
    egress = f'egress="sim{sim.port}"'
    taken = refused = 0.0
    for member in members:
        text = http("GET", f"http://127.0.0.1:{member.env['METRICS_PORT']}/metrics")[2]
        assert f'transmute_messenger_egress_limit{{{egress},kind="connection"}} 36.0' in text
        taken += metric(text, f'transmute_messenger_egress_taken_total{{{egress},kind="connection"}}')
        refused += metric(
            text, f'transmute_messenger_egress_refused_total{{{egress},kind="connection",why="budget"}}'
        )
    assert taken == 45 and refused >= 1


def test_a_reconnect_storm_of_every_member_stays_within_the_limits_and_the_service_comes_back(
    team: Team, gunicorn: Gunicorn
) -> None:
    sim, members, symbols = team
    all_in(sim, gunicorn, symbols)
    # Every connection of every member dropped at once; then again as soon as every symbol is
    # served, while some members still wait for the budget to let their last connections in.
    for storm in range(2):
        dropped = drop_all(sim)
        assert len(dropped) == 45 if storm == 0 else dropped
        wait_until(lambda: serving(gunicorn, symbols), 3 * WINDOW_S, 0.2, "every symbol served again")
    all_in(sim, gunicorn, symbols)
    report = violations(sim)
    assert report["total"] == 0, report["events"]
    assert cut_off(sim) == []
    assert report["peak"]["connections"]["127.0.0.1"] <= SIM_CONNECTIONS
    assert report["peak"]["weight"]["127.0.0.1"] <= SIM_WEIGHT * 9 // 10
    # The reconnects' seeds wanted more weight than the minute's budget: some waited for it.
    assert any(f"egress sim{sim.port}: budget" in m.log() for m in members)


def held_after_a_refusal(
    sim: Simulator, gunicorn: Gunicorn, symbols: list[str], refused: Callable[[], bool]
) -> None:
    """One connection dropped: its member reconnects (and seeds over REST), and is refused with a
    Retry-After. Once the simulator's grace for calls already on their way is over, every
    connection of every member drops: none may come back before the Retry-After ends."""
    one = sim.sessions()[0]["id"]
    sim.fault("drop", session=one)
    wait_until(refused, 5, what="the refusal")
    refused_at = time.monotonic()
    time.sleep(IN_FLIGHT_GRACE_S + 0.5)  # past the grace: from now on a call that was not held counts
    dropped = drop_all(sim)
    newest = max(dropped)
    while time.monotonic() < refused_at + RETRY_AFTER_S - 0.5:
        assert [s["id"] for s in sim.sessions() if s["id"] > newest] == []
        time.sleep(0.05)
    wait_until(
        lambda: serving(gunicorn, symbols), RETRY_AFTER_S + 3 * WINDOW_S, 0.2, "every symbol served again"
    )


def test_a_429_seen_by_one_member_holds_every_member_for_its_retry_after(
    team_factory: Callable[[int], Team], gunicorn: Gunicorn
) -> None:
    sim, _, symbols = team_factory(6000)  # REST weight to spare: the 429 is the only limit
    all_in(sim, gunicorn, symbols)
    # A handshake refused: only its member hears it; the others learn it from the shared back-off.
    sim.fault("connect_429", count=1, retry_after_s=RETRY_AFTER_S, status=429)
    held_after_a_refusal(sim, gunicorn, symbols, lambda: bool(sim.state()["refused_handshakes"]))
    # The same for a REST call (the reconnected member seeds its symbols over REST): a 429 to it
    # holds every member's calls and connections.
    all_in(sim, gunicorn, symbols)
    sim.fault("rest_429", count=1, retry_after_s=RETRY_AFTER_S)
    held_after_a_refusal(sim, gunicorn, symbols, lambda: sim.state()["rest_rejected"] >= 1)
    report = violations(sim)
    assert report["total"] == 0, (report["events"], sim.state()["loop_lag_max_ms"])
