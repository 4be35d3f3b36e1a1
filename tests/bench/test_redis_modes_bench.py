"""The Redis modes benchmark measures what it says: run as bench.run runs it (shortened), one
redis-server, Sentinel and a cluster each serve every answer right and take every frame, with
figures in a sane range; a wrong answer is caught; the table sets each mode's ratios beside single,
judges what must be zero, and says why a mode was not run."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from bench import ingest, redis_modes
from bench.run import _redis_modes_rows
from contract.keys import snapshot_key
from contract.redis_client import CLUSTER, SENTINEL, SINGLE
from tests.cluster import cluster_supported


@pytest.mark.redis
@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_every_mode_serves_right_and_takes_every_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_modes, "WARM_S", 1.0)
    monkeypatch.setattr(redis_modes, "SAMPLES", 5)
    monkeypatch.setattr(ingest, "WARM_S", 0.2)
    result = redis_modes.run(seconds=1, ingest_seconds=0.5, symbols=8, connections=10, repeats=1)
    measured = [SINGLE, SENTINEL]
    if (why := cluster_supported()) is None:
        measured.append(CLUSTER)
    else:  # this machine cannot run one: said so, in place of figures
        assert result["modes"][CLUSTER] == redis_modes.NOT_RUN + why
    for mode in measured:
        row = result["modes"][mode]
        for path in ("snapshot", "snapshots"):
            assert row[f"{path}_requests_per_s"] > 20, (mode, row)
            assert 0 < row[f"{path}_p50_ms"] <= row[f"{path}_p99_ms"] < 5000
            assert row[f"{path}_non_2xx"] == 0
            assert row[f"{path}_wrong_answers"] == 0
        assert row["snapshot_answers_checked"] == 5
        assert row["snapshots_answers_checked"] == 5 * 8  # every symbol streamed, in every answer
        assert row["ingest_wrong"] == 0
        assert row["ingest_frames_lost"] == 0
        assert row["ingest_frames_per_s"] > 1000
        assert 0 < row["ingest_cpu_us_per_frame"] < 1000
    modes, ratios = result["modes"], result["ratios_to_single"]
    assert sorted(ratios) == sorted(measured[1:])
    for mode in measured[1:]:
        expected = modes[mode]["ingest_frames_per_s"] / modes[SINGLE]["ingest_frames_per_s"]
        assert ratios[mode]["ingest_frames_per_s"] == pytest.approx(expected, abs=0.01)
    rows = _redis_modes_rows(result)
    assert [r[-1] for r in rows if r[-1]] == ["met"] * 3 * len(ratios)  # both paths' answers, and ingest
    assert {r[0].split(" vs ")[0] for r in rows} == {
        f"Redis {redis_modes.LABELS[m]}" for m in (SENTINEL, CLUSTER)
    }


@pytest.mark.redis
def test_an_answer_not_what_redis_holds_is_wrong(
    real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = {"BTCUSDT": ("101", "1.5", "2", "1.6", "3"), "ETHBTC": ("7", "0.1", "1", "0.2", "1")}
    records = []
    for symbol, (u, b, bq, a, aq) in stored.items():
        record = {"symbol": symbol, "bid_price": b, "bid_quantity": bq, "ask_price": a, "ask_quantity": aq,
                  "update_id": int(u), "ts": 1, "as_of": 1, "source": "stream", "connection": 1}  # fmt: skip
        real_redis.set(snapshot_key("bookticker", symbol), orjson.dumps({"voucher": "v", **record}))
        records.append({**record, "age_ms": 5})  # as served
    answer: list[tuple[int, dict[str, Any], Any]] = []
    monkeypatch.setattr(redis_modes, "http", lambda method, url: answer[-1])

    def wrong(status: int, doc: Any) -> int:
        answer.append((status, {}, doc))
        return redis_modes.wrong_answers("http://server/snapshots", real_redis, list(stored))

    assert wrong(200, {"kind": "bookTicker", "snapshots": records}) == 0
    behind = {**records[1], "update_id": 6}
    assert wrong(200, {"kind": "bookTicker", "snapshots": [records[0], behind]}) == 1
    assert wrong(200, {"kind": "bookTicker", "snapshots": records[::-1]}) == 2  # not in the order asked
    assert wrong(503, {"status_code": 503}) == 2
    answer.append((200, {}, records[0]))  # POST /snapshot/BTC_USDT answers the record itself
    assert redis_modes.wrong_answers("http://server/snapshot/BTC_USDT", real_redis, ["BTCUSDT"]) == 0


def _mode(**changes: float) -> dict[str, Any]:
    row: dict[str, Any] = {"ingest_cpu_us_per_frame": 20.0, "ingest_frames_per_s": 50_000.0,
                           "ingest_source_cpu_share": 0.05, "ingest_source_saturated": False,
                           "ingest_frames_lost": 0, "ingest_wrong": 0}  # fmt: skip
    for path in ("snapshot", "snapshots"):
        figures = {"requests_per_s": 1000.0, "p50_ms": 10.0, "p99_ms": 40.0, "non_2xx": 0,
                   "answers_checked": 20, "wrong_answers": 0}  # fmt: skip
        row.update({f"{path}_{figure}": value for figure, value in figures.items()})
    return {**row, **changes}


def test_the_table_sets_each_mode_beside_single_and_judges_what_must_be_zero() -> None:
    sentinel = _mode(snapshot_requests_per_s=900.0, snapshots_non_2xx=3, ingest_frames_lost=2)
    cluster = _mode(snapshots_requests_per_s=500.0, snapshots_p99_ms=80.0, ingest_cpu_us_per_frame=30.0)
    ratios = {m: dict.fromkeys(redis_modes.RATIOS, 1.0) for m in (SENTINEL, CLUSTER)}
    result: dict[str, Any] = {"connections": 50, "snapshots_symbols": 10, "symbols": 100, "source": "feed",
              "modes": {SINGLE: _mode(), SENTINEL: sentinel, CLUSTER: cluster},
              "ratios_to_single": ratios}  # fmt: skip
    result["ratios_to_single"][SENTINEL]["snapshot_requests_per_s"] = 0.9
    result["ratios_to_single"][CLUSTER].update(
        snapshots_requests_per_s=0.5, snapshots_p99_ms=2.0, ingest_cpu_us_per_frame=1.5
    )
    rows = _redis_modes_rows(result)
    cells = {(r[0], r[1]): r[2:] for r in rows}
    one = "Redis Sentinel vs single, POST /snapshot/BTC_USDT, wrk 50"
    many = "Redis Sentinel vs single, POST /snapshots, 10 symbols, wrk 50"
    ingested = "Redis Sentinel vs single, ingest 100 symbols (feed)"
    assert cells[one, "requests/s"] == ("Sentinel 900", "single 1,000", "0.90", "", "")
    assert cells[one, "p50 / p99 ms; non-2xx; wrong answers"] == (
        "Sentinel 10.0 / 40.0; 0; 0", "single 10.0 / 40.0; 0; 0", "p99 1.00",
        "0 non-2xx, 0 wrong (40 checked)", "met")  # fmt: skip
    assert cells[many, "p50 / p99 ms; non-2xx; wrong answers"][-1] == "3 bad"
    assert cells[ingested, "CPU us/frame"][:3] == ("Sentinel 20.0 (feed 5%)", "single 20.0 (feed 5%)", "1.00")
    assert cells[ingested, "frames lost; symbols wrong"][-1] == "2 lost, 0 wrong"
    many = "Redis Cluster vs single, POST /snapshots, 10 symbols, wrk 50"
    assert cells[many, "requests/s"] == ("Cluster 500", "single 1,000", "0.50", "", "")
    assert cells[many, "p50 / p99 ms; non-2xx; wrong answers"] == (
        "Cluster 10.0 / 80.0; 0; 0", "single 10.0 / 40.0; 0; 0", "p99 2.00",
        "0 non-2xx, 0 wrong (40 checked)", "met")  # fmt: skip
    ingested = "Redis Cluster vs single, ingest 100 symbols (feed)"
    assert cells[ingested, "CPU us/frame"][:3] == ("Cluster 30.0 (feed 5%)", "single 20.0 (feed 5%)", "1.50")
    assert cells[ingested, "frames lost; symbols wrong"][-1] == "met"


def test_a_mode_not_run_says_why_in_place_of_figures() -> None:
    why = redis_modes.NOT_RUN + "redis-server 6.2.6 is older than 7: no cluster-port"
    result: dict[str, Any] = {"connections": 50, "snapshots_symbols": 10, "symbols": 100, "source": "feed",
              "modes": {SINGLE: _mode(), CLUSTER: why}, "ratios_to_single": {}}  # fmt: skip
    assert _redis_modes_rows(result) == [("Redis Cluster vs single", "serving; ingest", why, "", "", "", "")]
