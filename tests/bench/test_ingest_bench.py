"""The ingest benchmark judges what it measures: every reader, run as the benchmark runs it, must
leave exactly the last value sent for every symbol, and one value off is caught."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from bench import ingest
from bench.readers import ASYNCIO, MESSENGER, MESSENGER_PICOWS, PICOWS, POC, Quote, Reader
from bench.run import _ingest_rows
from bench.sources import FeedProcess, FeedSource, SimulatorSource
from contract.keys import snapshot_key
from tests.processes import RedisServer, Simulator

pytestmark = pytest.mark.redis

SYMBOLS = ["BTCUSDT", "ETHBTC", "BNBBTC"]


@pytest.fixture
def feed(logs_dir: Path) -> Iterator[FeedProcess]:
    process = FeedProcess(logs_dir, "--no-flood")
    process.start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def short_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "WARM_S", 0.2)


@pytest.mark.parametrize("reader", [MESSENGER, MESSENGER_PICOWS, ASYNCIO, PICOWS, POC], ids=lambda r: r.name)
def test_each_reader_leaves_the_last_value_the_feed_sent_for_every_symbol(
    reader: Reader, feed: FeedProcess, sim: Simulator, redis_server: RedisServer, logs_dir: Path
) -> None:
    source = FeedSource(feed)
    result = ingest.measure(reader, source, SYMBOLS, 0.5, redis_server, sim.rest_url, logs_dir)
    assert result["wrong"] == 0
    assert result["frames_per_s"] > 1000
    assert 0 < result["cpu_us_per_frame"] < 1000
    assert result["source_cpu_share"] < ingest.SATURATED  # (in clock ticks of 10 ms: may read 0)
    if reader in (MESSENGER, MESSENGER_PICOWS):
        assert result["frames_lost"] == 0
    if reader in (ASYNCIO, PICOWS):  # (the messenger deletes its values as it stops; the POC's expire)
        sent, client = source.last(SYMBOLS), redis_server.client()
        assert ingest.wrong_values(reader, client, SYMBOLS, sent) == 0
        client.delete(reader.keys(SYMBOLS)[1])
        assert ingest.wrong_values(reader, client, SYMBOLS, sent) == 1


def test_a_value_one_update_behind_is_caught(real_redis: redis.Redis) -> None:
    sent: dict[str, Quote] = {"BTCUSDT": (101, "1.5", "2", "1.6", "3"), "ETHBTC": (7, "0.1", "1", "0.2", "1")}
    for symbol, (u, b, bq, a, aq) in sent.items():
        record = {
            "voucher": "v",
            "symbol": symbol,
            "bid_price": b,
            "bid_quantity": bq,
            "ask_price": a,
            "ask_quantity": aq,
            "update_id": u,
            "ts": 1,
            "as_of": 1,
            "source": "stream",
            "connection": 1,
        }
        real_redis.set(snapshot_key("bookticker", symbol), orjson.dumps(record))
    assert ingest.wrong_values(MESSENGER, real_redis, list(sent), sent) == 0
    assert ingest.wrong_values(MESSENGER, real_redis, [*sent, "BNBBTC"], sent) == 1  # never sent: wrong
    behind = {**sent, "ETHBTC": (8, "0.1", "1", "0.2", "1")}
    assert ingest.wrong_values(MESSENGER, real_redis, list(sent), behind) == 1
    # The simulator's REST books carry no update id: then the prices alone must match.
    assert (
        ingest.wrong_values(
            MESSENGER, real_redis, list(sent), {**behind, "ETHBTC": (None, *sent["ETHBTC"][1:])}
        )
        == 0
    )


def test_the_simulators_flood_is_judged_by_its_books(
    sim_factory: Callable[..., Simulator], redis_server: RedisServer, logs_dir: Path
) -> None:
    sim = sim_factory("--flood")
    result = ingest.measure(ASYNCIO, SimulatorSource(sim), SYMBOLS, 0.5, redis_server, sim.rest_url, logs_dir)
    assert result["wrong"] == 0
    assert result["frames_per_s"] > 1000


def test_the_table_holds_the_messenger_to_its_peers_and_names_a_saturated_source() -> None:
    figures = {"ceiling": (8.0, 100_000.0), "poc": (150.0, 5_000.0), "messenger": (20.0, 50_000.0),
               "asyncio": (10.0, 90_000.0), "picows": (2.0, 400_000.0),
               "messenger_picows": (5.0, 80_000.0)}  # fmt: skip
    runs = {
        reader: [{"cpu_us_per_frame": cpu, "frames_per_s": rate, "redis_cpu_share": 0.1, "rss_mb": 40.0,
                  "source_cpu_share": 0.95 if reader == "picows" else 0.1, "wrong": 0, "frames_lost": 0}]
        for reader, (cpu, rate) in figures.items()
    }  # fmt: skip
    rows = _ingest_rows(ingest.summarize(100, "feed", runs))
    cells = {(r[1], r[3].split(" ")[0]): r for r in rows}
    assert cells["CPU us/frame", "asyncio"][2:] == ("20.0 (feed 10%)", "asyncio peer 10.0 (feed 10%)",
                                                    "2.00", "<= 1.00", "missed by 100%")  # fmt: skip
    assert cells["CPU us/frame", "ceiling"][4:] == ("2.50", "<= 1.25", "missed by 100%")
    assert cells["frames/s into Redis", "ceiling"][4:] == ("0.50", ">= 0.85", "missed by 41%")
    assert "picows peer 2.0 (feed 95%: saturated)" in cells["CPU us/frame", "picows"][3]
    assert cells["CPU us/frame", "messenger"][2:] == ("20.0 (feed 10%)", "messenger on picows 5.0 (feed 10%)",
                                                      "0.25", "", "")  # fmt: skip
    assert cells["frames lost; symbols wrong", "wrong:"][-1] == "met"


class Sent:
    """A source that has stopped, having sent ``quotes`` last."""

    def __init__(self, quotes: dict[str, Quote]) -> None:
        self.quotes = quotes

    def last(self, symbols: list[str]) -> dict[str, Quote]:
        return self.quotes


def test_values_that_expire_are_judged_as_they_land_lasting_ones_all_at_once(
    real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The POC's values expire a second after their last write, so while it catches up the first are
    gone before the last land: each must have landed. A lasting reader's must all be there at once."""
    monkeypatch.setattr(ingest, "SETTLE_S", 1.0)
    sent: dict[str, Quote] = {"BTCUSDT": (5, "1", "2", "3", "4"), "ETHBTC": (6, "1", "2", "3", "4")}
    source: Any = Sent(sent)
    payloads = {
        s: orjson.dumps({"u": q[0], "s": s, "b": "1", "B": "2", "a": "3", "A": "4"}) for s, q in sent.items()
    }
    for reader in (POC, ASYNCIO):
        first, second = reader.keys(list(sent))
        real_redis.set(first, payloads["BTCUSDT"], px=300)
        px = 300 if reader is POC else None  # the last stays: only the first is missing at the end
        later = threading.Timer(0.5, lambda: real_redis.set(second, payloads["ETHBTC"], px=px))  # noqa: B023
        later.start()
        wrong, _ = ingest.settle(reader, source, real_redis, list(sent))
        later.join()
        assert wrong == (0 if reader is POC else 1), reader.name
