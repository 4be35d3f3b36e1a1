"""The members benchmark measures what it says: one and two member processes, run as the benchmark
runs them, each leave the last value sent for every symbol and read every frame; a kill's
recovery is timed to the last of its symbols back; the table judges each target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import members
from bench.run import _conditional_rows, _failover_rows, _members_rows
from bench.sources import FeedProcess, FeedSource
from tests.processes import RedisServer, Simulator

SYMBOLS = ["BTCUSDT", "ETHBTC", "BNBBTC", "LTCBTC", "ETHUSDT", "BNBUSDT", "XRPBTC", "ADABTC"]


@pytest.fixture
def feed(logs_dir: Path) -> Iterator[FeedProcess]:
    process = FeedProcess(logs_dir, "--no-flood")
    process.start()
    yield process
    process.stop()


@pytest.mark.redis
@pytest.mark.parametrize("processes", [1, 2])
def test_each_process_count_reads_every_frame_and_leaves_the_last_value_sent(
    processes: int, feed: FeedProcess, sim: Simulator, redis_server: RedisServer, logs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(members, "WARM_S", 0.2)
    result = members.measure(processes, FeedSource(feed), SYMBOLS, 0.5, redis_server, sim.rest_url, logs_dir)
    assert result["wrong"] == 0
    assert result["frames_lost"] == 0
    assert result["extra_streams"] == 0
    assert result["frames_per_s"] > 1000
    assert 0 < result["cpu_us_per_frame"] < 1000


@pytest.mark.redis
def test_a_killed_members_symbols_are_timed_until_served_again_by_the_others() -> None:
    result = members.run_failover(kills=1, liveness_ms=1500, n_symbols=6)
    # Its symbols fail once its vouchers expire and come back once the others take them, after
    # they presume it dead: neither instant nor later than the bound.
    assert 0 < result["outage_worst_s"] <= result["served_again_worst_s"] <= result["bound_s"]
    assert result["served_again_worst_s"] > 1.0


def test_a_kill_is_over_when_the_last_of_its_symbols_has_failed_and_answered_200_again() -> None:
    answers = [(0.5, "A", 200), (1.1, "A", 500), (1.2, "B", 500), (2.0, "A", 500), (2.5, "A", 200)]
    assert members.recovery(answers, ["A", "B"], killed_at=1.0) is None  # B is not back
    assert members.recovery(answers, ["A", "B", "C"], killed_at=1.0) is None  # C never failed
    answers.append((3.0, "B", 200))
    assert members.recovery(answers, ["A", "B"], killed_at=1.0) == pytest.approx((2.0, 1.8))
    answers.append((3.2, "A", 500))  # failing again: not over
    assert members.recovery(answers, ["A", "B"], killed_at=1.0) is None
    answers.append((3.5, "A", 200))
    assert members.recovery(answers, ["A", "B"], killed_at=1.0) == pytest.approx((2.5, 1.8))


def _ingest_row(changes: dict[tuple[int, str], float]) -> dict[str, Any]:
    runs = {p: [{"cpu_us_per_frame": 10.0, "frames_per_s": 50_000.0, "members_cpu_share": 0.5 * p,
                 "source_cpu_share": 0.05, "redis_cpu_share": 0.1, "busy_cores": 0.6 * p, "wrong": 0,
                 "settle_s": 0.1, "frames_lost": 0, "extra_streams": 0}]
            for p in members.PROCESSES}  # fmt: skip
    for (p, metric), value in changes.items():
        runs[p][0][metric] = value
    return {**members.summarize(100, "feed", runs), "cores": 2}


def test_the_table_holds_two_processes_to_one_and_names_what_limits_the_rate() -> None:
    rows = _members_rows(_ingest_row({(2, "cpu_us_per_frame"): 11.5, (2, "frames_per_s"): 90_000.0}))
    cpu, rate, lost = rows
    assert cpu[2:] == ("2 processes 11.5 (feed 5%; 1.2 of 2 cores busy)",
                       "1 process 10.0 (feed 5%; 0.6 of 2 cores busy)", "1.15", "<= 1.10",
                       "missed by 5%")  # fmt: skip
    assert rate[4:] == ("1.80", "> 1.00 unless the source is the limit", "met")
    assert lost[-1] == "met"
    slower = {(2, "frames_per_s"): 45_000.0}
    assert _members_rows(_ingest_row(slower))[1][-1] == "missed by 10%"
    busy = {**slower, (2, "busy_cores"): 1.95}
    assert _members_rows(_ingest_row(busy))[1][-1] == "missed by 10%: the machine is the limit"
    saturated = {**slower, (2, "source_cpu_share"): 0.95}
    row = _members_rows(_ingest_row(saturated))[1]
    assert row[-1] == "not judged: the feed is the limit" and "feed 95%: saturated" in row[2]
    assert _members_rows(_ingest_row({(1, "frames_lost"): 3}))[2][-1] == "3 lost, 0 wrong, 0 left"
    left = _members_rows(_ingest_row({(2, "extra_streams"): 18, (2, "frames_lost"): 5000}))[2]
    assert left[2:] == ("2 processes 5,000; 0; 18", "1 process 0; 0; 0", "", "0 lost, 0 wrong, 0 left",
                        "5,000 lost, 0 wrong, 18 left")  # fmt: skip


def test_the_table_judges_failover_against_the_liveness_timeout_plus_1s() -> None:
    f = {"kills": 10, "members": 3, "liveness_timeout_ms": 2000, "bound_s": 3.0, "served_again_median_s": 2.2,
         "served_again_worst_s": 2.6, "outage_median_s": 1.1, "outage_worst_s": 1.5}  # fmt: skip
    served, _ = _failover_rows(f)
    assert served[2:] == ("2.20 / 2.60", "LIVENESS_TIMEOUT_MS 2 s + 1 s", "0.87", "worst <= 3 s", "met")
    assert _failover_rows({**f, "served_again_worst_s": 3.3})[0][-1] == "missed by 10%"


def test_the_table_judges_the_conditional_writers_extra_cpu_per_frame() -> None:
    mode = {"messenger_cpu_us_per_frame": 10.0, "redis_cpu_us_per_record": 2.0}
    c = {"records_per_batch": 150.0, "pad_bytes": 6000, "redis_cpu_ratio_conditional_to_plain": 1.5,
         "conditional_extra_share_of_messenger_cpu_per_frame": 0.12,
         "modes": {"plain": mode, "conditional": {**mode, "redis_cpu_us_per_record": 3.0},
                   "conditional, 2 members": mode}}  # fmt: skip
    share, redis_cpu = _conditional_rows(c)
    assert share[0] == "conditional writes, 150-record batches, 6 KB records"
    assert share[4:] == ("+12.0%", "<= 10%", "missed by 20%")
    assert redis_cpu[2:5] == ("conditional 3.0; 2 members 2.0", "plain SET 2.0", "1.50")
