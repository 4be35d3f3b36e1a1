"""The freshness benchmark measures what it says on either flood source: a probe's frame is timed
until readable over HTTP and in Redis, the source's CPU is reported beside it, and the table has a
row for each source and transport measured, named so."""

from __future__ import annotations

import os
import time

import pytest

from bench import freshness
from bench.run import _freshness_rows
from bench.sources import SimulatorSource
from messenger.writer import MIN_WRITE_INTERVAL_S


@pytest.mark.redis
@pytest.mark.e2e
def test_on_the_paced_feed_every_probe_is_timed_at_the_rate_asked_with_the_feeds_cpu() -> None:
    figures = freshness.run_once(symbols=40, rate=50, samples=20, source_name="feed")
    assert figures["missed"] == 0
    assert 0 < figures["redis_p50_ms"] <= figures["redis_p99_ms"] < freshness.GIVE_UP_S * 1000
    assert 0 < figures["http_p50_ms"] <= figures["http_p99_ms"] < freshness.GIVE_UP_S * 1000
    # 40 symbols at 50 updates/s: 2,000 frames/s from the feed (a flood would be ten times that and
    # more), less what a busy machine keeps it or the messenger from (over half a second of samples).
    assert 1000 <= figures["frames_per_s"] + figures["frames_skipped_per_s"] <= 2500
    assert 0 < figures["source_cpu_share"] < 0.5
    assert figures["messenger_p99_ms_at_most"] > 0
    # The writer's round trips, counted: one at least MIN_WRITE_INTERVAL_S after the last one ended.
    assert 0 < figures["writer_batches_per_s"] <= 1 / MIN_WRITE_INTERVAL_S
    # Every read is timed: a round trip is no longer than the latency it ended.
    for reader in ("http", "redis"):
        assert 0 < figures[f"{reader}_read_p50_ms"] <= figures[f"{reader}_read_p99_ms"]
        assert figures[f"{reader}_read_p50_ms"] <= figures[f"{reader}_p99_ms"]
    # What each part took of a core, and how full the machine was: each ran, none past a whole core
    # (each is one process, or gunicorn's few), and together no more than the machine has.
    shares = [figures[f"{part}_cpu_share"] for part in ("messenger", "redis", "server", "source", "probe")]
    assert all(0 < share < 2 for share in shares), shares
    assert 0 < figures["machine_busy_cores"] <= (os.cpu_count() or 1) + 0.05


@pytest.mark.redis
@pytest.mark.e2e
def test_one_member_per_core_is_measured_as_compose_runs_it() -> None:
    figures = freshness.run_once(
        symbols=40, rate=50, samples=10, source_name="feed", processes=freshness.PER_CORE
    )
    assert figures["missed"] == 0
    assert 0 < figures["http_p50_ms"] <= figures["http_p99_ms"] < freshness.GIVE_UP_S * 1000
    assert figures["messenger_p99_ms_at_most"] > 0  # every member's histogram, summed
    assert figures["messenger_cpu_share"] > 0  # every member process counted
    assert 0 < figures["writer_batches_per_s"] <= freshness.cores() / MIN_WRITE_INTERVAL_S  # each member's


@pytest.mark.redis
@pytest.mark.e2e
def test_on_the_simulator_the_probes_wait_in_its_queue_is_reported_beside_the_latencies() -> None:
    figures = freshness.run_once(symbols=40, rate=20, samples=20, source_name="simulator")
    assert figures["missed"] == 0
    assert 0 < figures["http_p50_ms"] <= figures["http_p99_ms"] < freshness.GIVE_UP_S * 1000
    queued = figures["source_queued_p50_ms"], figures["source_queued_p99_ms"]
    assert 0 <= queued[0] <= queued[1] < freshness.GIVE_UP_S * 1000


class QueuedProbe(SimulatorSource):
    """A simulator whose probe waits ``wait_s`` in its queue before it is written."""

    def __init__(self, wait_s: float) -> None:  # no simulator behind it
        self.wait_s = wait_s
        self.queued_s = 0.0

    def probe(self, n: int) -> tuple[int, float]:
        self.queued_s = time.time()
        return 7, self.queued_s

    def written(self, u: int) -> tuple[float, float] | None:
        return self.queued_s, self.queued_s + self.wait_s


def test_a_simulator_latency_counts_from_the_write_and_its_queue_wait_is_kept_apart() -> None:
    reads: list[float] = []
    queued: list[float] = []

    def reader() -> int:
        time.sleep(0.06)
        return 7

    latency = freshness.sample(QueuedProbe(0.05), reader, 0, reads, queued)
    assert latency is not None
    assert queued == [pytest.approx(50.0)]
    # 60 ms of reading, 50 of them the simulator's queue: counted from the write, the rest.
    assert 0.005 <= latency < 0.04


def test_the_sides_measured_by_default_and_on_request() -> None:
    pairs = (("simulator", "websocket-client"), ("feed", "websocket-client"))
    assert freshness.sides(("simulator", "feed"), ("websocket-client",)) == [(*p, 1) for p in pairs] + [
        ("feed", "websocket-client", freshness.PER_CORE),
        ("feed", freshness.PEER, 1),  # the floor, on the feed unless asked otherwise
    ]
    assert freshness.sides(("simulator",), ("picows",)) == [("simulator", "picows", 1)]
    assert freshness.sides(("feed",), ("picows",), (1, 0)) == [
        ("feed", "picows", 1), ("feed", "picows", 0), ("feed", freshness.PEER, 1)
    ]  # fmt: skip
    assert freshness.sides(("feed",), ("picows",), peer=()) == [("feed", "picows", 1)]
    assert freshness.sides(("simulator", "feed"), (), peer=("simulator", "feed")) == [
        ("simulator", freshness.PEER, 1), ("feed", freshness.PEER, 1)
    ]  # fmt: skip
    assert freshness.prefix("feed", freshness.PEER) == "feed_peer_"


@pytest.mark.redis
@pytest.mark.e2e
def test_the_floor_is_a_peer_writing_as_frames_come_read_through_the_bare_app() -> None:
    figures = freshness.run_once(40, 50, 60, transport=freshness.PEER, source_name="feed")
    # Every probe's update id came back over HTTP and from Redis: the peer wrote it as it came, under
    # the key the bare app answers with.
    assert figures["missed"] == 0
    assert 0 < figures["http_p50_ms"] <= figures["http_p99_ms"] < freshness.GIVE_UP_S * 1000
    assert 0 < figures["redis_p50_ms"] <= figures["redis_p99_ms"] < freshness.GIVE_UP_S * 1000
    assert 1000 <= figures["frames_per_s"] + figures["frames_skipped_per_s"] <= 2500
    # Its parts measured as the messenger's are, the peer where the messenger was (its share over a
    # second of samples: Redis's few plain SETs may take less than a tick); no messenger figures.
    assert figures["peer_cpu_share"] > 0
    assert all(0 <= figures[f"{part}_cpu_share"] < 2 for part in ("redis", "server", "source", "probe"))
    assert not {"messenger_cpu_share", "messenger_p99_ms_at_most", "writer_batches_per_s"} & set(figures)


def test_a_sides_tail_is_set_against_the_floors_of_the_same_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two repeats: the host was slow in the first (the floor too), quick in the second.
    p99s = {("feed", "websocket-client"): [12.0, 4.0], ("feed", freshness.PEER): [6.0, 1.0]}
    taken: list[tuple[str, str]] = []

    def run_once(
        symbols: int, rate: float, samples: int, transport: str, source: str, processes: int
    ) -> dict[str, float]:
        taken.append((source, transport))
        p99 = p99s[source, transport][sum(t == (source, transport) for t in taken) - 1]
        return {"http_p50_ms": 1.0, "http_p99_ms": p99, "redis_p50_ms": 0.5, "redis_p99_ms": p99 / 2}

    monkeypatch.setattr(freshness, "run_once", run_once)
    row = freshness.run(transports=("websocket-client",), sources=("feed",), repeats=2, processes=(1,))
    assert taken == [("feed", "websocket-client"), ("feed", freshness.PEER)] * 1 + [
        ("feed", freshness.PEER), ("feed", "websocket-client")
    ]  # fmt: skip
    # 12/6 and 4/1, each against its own repeat: the median of 2.0 and 4.0 (not 8.0 / 3.5).
    assert row["feed_http_p99_over_peer"] == pytest.approx(3.0)
    assert row["feed_peer_http_p99_ms"] == pytest.approx(3.5)
    assert "feed_peer_http_p99_over_peer" not in row


def test_each_source_and_transport_has_its_row_with_the_sources_share_of_a_core() -> None:
    sides = {("simulator", "websocket-client", 1): 40.0, ("simulator", "picows", 1): 12.0,
             ("feed", "websocket-client", 1): 9.0, ("feed", "picows", 1): 4.0,
             ("feed", "websocket-client", 0): 6.0, ("feed", freshness.PEER, 1): 3.0}  # fmt: skip
    row: dict[str, float] = {"symbols": 2000}
    for (source, transport, processes), p99 in sides.items():
        p = freshness.prefix(source, transport, processes)
        row |= {f"{p}http_p50_ms": p99 / 3, f"{p}http_p99_ms": p99, f"{p}redis_p50_ms": 1.0,
                f"{p}redis_p99_ms": p99 / 2, f"{p}http_p99_over_redis_p99": 2.0, f"{p}frames_per_s": 20_000.0,
                f"{p}source_cpu_share": 0.8 if source == "simulator" else 0.07}  # fmt: skip
        if source == "feed":  # the parts' shares, as a run since they are measured reports them
            reader = "peer" if transport == freshness.PEER else "messenger"
            row |= {f"{p}{reader}_cpu_share": 0.41, f"{p}redis_cpu_share": 0.23,
                    f"{p}server_cpu_share": 0.08, f"{p}probe_cpu_share": 0.1,
                    f"{p}machine_busy_cores": 1.07, f"{p}http_read_p50_ms": 0.4,
                    f"{p}http_read_p99_ms": 2.5, f"{p}redis_read_p50_ms": 0.1,
                    f"{p}redis_read_p99_ms": 0.9}  # fmt: skip
    row |= {"source_queued_p50_ms": 1.25, "source_queued_p99_ms": 7.5}  # the simulator's probe queue
    assert (
        freshness.prefix("simulator", "websocket-client") == ""
    )  # the figures measured before keep their names
    assert freshness.prefix("feed", "picows") == "feed_picows_"
    assert freshness.prefix("feed", "websocket-client", 0) == "feed_members_"
    row["feed_members_members"] = 2.0
    row["feed_http_p99_over_peer"] = 3.0  # measured against the floor of each repeat
    rows = _freshness_rows(row)
    latency = [r for r in rows if r[1] == "sent -> readable, p50 / p99 ms"]
    assert [r[0] for r in latency] == [
        "freshness, 20,000 frames/s from the simulator",
        "freshness, 20,000 frames/s from the simulator, picows",
        "freshness, 20,000 frames/s from the feed",
        "freshness, 20,000 frames/s from the feed, picows",
        "freshness, 20,000 frames/s from the feed, 2 members (one per core, as compose runs it)",
        "freshness, 20,000 frames/s from the feed, the floor: picows peer writing as frames come, bare app"
        " (no freshness rule)",
    ]
    assert latency[2][2] == "HTTP 3.0 / 9.0 (feed 7%)"
    assert latency[0][2] == "HTTP 13.3 / 40.0 (simulator 80%)"
    assert [r[-1] for r in latency] == [
        "missed by 700%",
        "missed by 140%",
        "missed by 80%",
        "met",
        "missed by 20%",
        "",  # the floor is a baseline, held to no target
    ]
    assert latency[5][4:6] == ("2.00", "")  # HTTP over Redis, as every side; no target
    # A side measured beside the floor is set against it (the ratio of the same repeats).
    against = "sent -> readable over HTTP, p99 ms, against the floor (same repeats)"
    floor = [r for r in rows if r[1] == against]
    assert floor == [(latency[2][0], against, "9.0", "floor 3.0", "3.00", "", "")]
    # Each side whose parts were measured has their shares beside it (older results have none).
    shares = [r for r in rows if r[1] == "share of a core over the samples"]
    assert [r[0] for r in shares] == [latency[2][0], latency[3][0], latency[4][0], latency[5][0]]
    assert shares[0][2:4] == (
        "messenger 41%, Redis 23%, server 8%, source 7%, probe 10%",
        "machine 1.07 cores busy",
    )
    assert shares[3][2] == "peer 41%, Redis 23%, bare app 8%, source 7%, probe 10%"
    reads = [r for r in rows if r[1] == "one read's round trip, p50 / p99 ms"]
    assert [r[0] for r in reads] == [latency[2][0], latency[3][0], latency[4][0], latency[5][0]]
    assert reads[0][2:4] == ("HTTP 0.4 / 2.5", "Redis 0.1 / 0.9")
    assert rows.index(floor[0]) == rows.index(latency[2]) + 1
    assert rows.index(reads[0]) == rows.index(latency[2]) + 2
    assert rows.index(shares[0]) == rows.index(latency[2]) + 3
    queues = [r for r in rows if r[1] == "probe queued in the simulator before its write, p50 / p99 ms"]
    assert [r[0] for r in queues] == [latency[0][0]]
    assert queues[0][2:4] == ("1.2 / 7.5", "not counted above (Binance's queue)")
    only_feed = {k: v for k, v in row.items() if k.startswith("feed_")}
    assert _freshness_rows(only_feed) == [r for r in rows if "from the feed" in r[0]]
