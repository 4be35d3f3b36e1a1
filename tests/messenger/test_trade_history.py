"""The kept trade lists on the messenger's side: a tail without a hole, catch-ups, older ranges."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from contract.backfill import BACKFILL_KEY, Backfill
from contract.trade_history import TAIL_KEPT, backfilled_key, origin_key, tail_key
from messenger.rest import RestError
from messenger.trade_history import APPEND_SCRIPT, TradeHistory

TAIL = tail_key("aggtrade", "BTCUSDT")
OLDER = backfilled_key("aggtrade", "BTCUSDT")
ORIGIN = origin_key("aggtrade", "BTCUSDT")


def agg(n: int) -> dict[str, Any]:
    """Aggregate trade ``n`` of a made-up exchange: one every 10 ms from t=1,000,000."""
    return {"a": n, "p": f"{100 + n % 7}.00000000", "q": "0.50000000", "f": 2 * n, "l": 2 * n + 1,
            "T": 1_000_000 + 10 * n, "m": n % 2 == 0, "M": True}  # fmt: skip


def streamed(n: int) -> dict[str, Any]:
    """The same trade as the aggTrade stream's parser hands it over."""
    t = agg(n)
    return {"symbol": "BTCUSDT", "agg_trade_id": n, "price": t["p"], "quantity": t["q"],
            "first_trade_id": t["f"], "last_trade_id": t["l"], "trade_time": t["T"],
            "is_buyer_maker": t["m"], "event_time": t["T"] + 1}  # fmt: skip


class Exchange:
    """Binance's aggTrades (fromId, startTime, limit; else the most recent) over ids first..newest
    (Binance's first ids are 0; the simulator's are not)."""

    def __init__(self, newest: int, first: int = 0) -> None:
        self.newest = newest
        self.first = first
        self.base_url = "http://exchange"
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.fail: Exception | None = None

    def get(self, path: str, params: dict[str, str]) -> Any:
        self.calls.append((path, params))
        if self.fail is not None:
            raise self.fail
        assert path == "/api/v3/aggTrades"
        limit = int(params["limit"])
        if "fromId" in params:
            first = max(self.first, int(params["fromId"]))
        elif "startTime" in params:
            first = max(self.first, -(-(int(params["startTime"]) - 1_000_000) // 10))
        else:
            first = max(self.first, self.newest - limit + 1)
        return [agg(n) for n in range(first, min(first + limit, self.newest + 1))]


def ids(client: redis.Redis, key: str) -> list[int]:
    rows: Any = client.zrange(key, 0, -1, withscores=True)
    return [int(score) for _, score in rows]


def append(client: redis.Redis, mode: str, numbers: list[int] | range) -> list[int]:
    """Run the append script: [the tail's newest id, how many of the batch it took]."""
    args: list[Any] = [mode, TAIL_KEPT, 60_000]
    for n in numbers:
        args += [n, orjson.dumps(agg(n))]
    reply: list[int] = client.register_script(APPEND_SCRIPT)(keys=[TAIL], args=args)
    return reply[:2]


def test_the_tail_takes_only_what_joins_it_without_a_hole(any_redis: redis.Redis) -> None:
    assert append(any_redis, "extend", [5, 6, 7]) == [7, 3]
    assert append(any_redis, "extend", [9, 10]) == [7, 0]  # 8 is missing: refused whole
    assert append(any_redis, "extend", [8, 9, 11, 12]) == [9, 2]  # up to the batch's own hole
    assert append(any_redis, "extend", [2, 3, 4, 5, 6]) == [9, 5]  # older, touching the tail
    assert append(any_redis, "extend", [7, 8, 9, 10]) == [10, 4]  # overlaps: each id once
    assert ids(any_redis, TAIL) == list(range(2, 11))
    assert any_redis.zcard(TAIL) == 9
    assert append(any_redis, "reset", [500, 501]) == [501, 2]  # newer, not joining: starts again
    assert ids(any_redis, TAIL) == [500, 501]
    assert append(any_redis, "reset", [3, 4]) == [501, 0]  # never goes back
    assert 0 < any_redis.pttl(TAIL) <= 60_000


def test_the_tail_keeps_the_last_thousand(any_redis: redis.Redis) -> None:
    append(any_redis, "extend", list(range(0, 1500)))
    assert ids(any_redis, TAIL) == list(range(500, 1500))


@pytest.fixture
def history(fake_redis: redis.Redis) -> tuple[TradeHistory, Exchange]:
    exchange = Exchange(newest=5000)
    return TradeHistory(fake_redis, exchange, 3000), exchange  # type: ignore[arg-type]


def test_streamed_items_are_appended_and_a_gap_asks_for_a_catch_up(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = history
    append(fake_redis, "extend", range(1000, 2000))
    for n in (2000, 2001, 2002):
        keeper.add(TAIL, streamed(n))
    keeper._flush()
    assert ids(fake_redis, TAIL) == list(range(1003, 2003))
    assert fake_redis.zrange(TAIL, -1, -1) == [orjson.dumps(agg(2002))]  # Binance's REST shape exactly
    for n in (2010, 2011):  # 2003 to 2009 were lost (a reconnect)
        keeper.add(TAIL, streamed(n))
    keeper._flush()
    assert ids(fake_redis, TAIL)[-1] == 2002
    assert fake_redis.zrange(BACKFILL_KEY, 0, -1) == [Backfill("aggtrade", "BTCUSDT", 2003).member().encode()]
    exchange.newest = 2011
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 2003))  # the backfill worker runs it
    assert exchange.calls == [("/api/v3/aggTrades", {"symbol": "BTCUSDT", "fromId": "2002", "limit": "1000"})]
    keeper._flush()
    assert ids(fake_redis, TAIL) == list(range(1012, 2012))
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 2003))  # asked again: nothing is missing now
    assert len(exchange.calls) == 1


def test_a_tail_the_stream_started_is_filled_once_with_the_last_thousand(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = history  # the exchange's newest is 5000
    for n in (4999, 5000):  # a first frame beat the seed
        keeper.add(TAIL, streamed(n))
    keeper._flush()
    keeper.add(TAIL, streamed(5001))
    keeper._flush()
    assert fake_redis.zrange(BACKFILL_KEY, 0, -1) == [b"aggtrade:BTCUSDT:5001"]  # asked once
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 5001))
    assert exchange.calls == [("/api/v3/aggTrades", {"symbol": "BTCUSDT", "limit": "1000"})]
    assert ids(fake_redis, TAIL) == list(range(4002, 5002))


def test_a_seed_after_a_reconnect_fetches_only_what_was_missed(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = history
    append(fake_redis, "extend", range(3900, 4900))
    order, fields = keeper.catch_up("aggtrade", "BTCUSDT", seed=True) or (None, {})
    assert (order, fields["agg_trade_id"], fields["price"]) == (5000, 5000, agg(5000)["p"])
    assert exchange.calls == [("/api/v3/aggTrades", {"symbol": "BTCUSDT", "fromId": "4899", "limit": "1000"})]
    assert ids(fake_redis, TAIL) == list(range(4001, 5001))


def test_more_missed_than_the_tail_keeps_starts_it_again_from_the_newest(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = history
    append(fake_redis, "extend", range(1000, 2000))
    latest = keeper.catch_up("aggtrade", "BTCUSDT", seed=True)
    assert latest is not None and latest[0] == 5000
    assert [c[1].get("fromId") for c in exchange.calls] == ["1999", None]  # a full page, then the newest
    assert ids(fake_redis, TAIL) == list(range(4001, 5001))


def test_an_empty_tail_is_seeded_with_the_newest_thousand_in_one_call(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = history
    assert keeper.catch_up("aggtrade", "BTCUSDT", seed=True) is not None
    assert exchange.calls == [("/api/v3/aggTrades", {"symbol": "BTCUSDT", "limit": "1000"})]
    assert ids(fake_redis, TAIL) == list(range(4001, 5001))


def test_an_older_range_is_fetched_once_in_one_call_per_thousand(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = history
    append(fake_redis, "extend", list(range(4001, 5001)))
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 1200))
    assert exchange.calls == [("/api/v3/aggTrades", {"symbol": "BTCUSDT", "fromId": "1200", "limit": "1000"})]
    assert ids(fake_redis, OLDER) == list(range(1200, 2200))
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 1200))  # asked again (another worker): held, no call
    assert len(exchange.calls) == 1
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 3500))  # kept up to the tail only
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 1500))  # from the first id not held
    assert [c[1]["fromId"] for c in exchange.calls[1:]] == ["3500", "2200"]
    assert ids(fake_redis, OLDER) == [*range(1200, 3200), *range(3500, 4001)]
    assert 0 < fake_redis.pttl(OLDER) <= 3_600_000


def test_past_the_cap_what_lies_farthest_from_the_new_range_goes(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, _ = history  # keeps 3,000
    for reach in (1000, 2000, 3000):
        keeper.backfill(Backfill("aggtrade", "BTCUSDT", reach))
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 4000))  # walking forward: the oldest goes
    assert ids(fake_redis, OLDER) == list(range(2000, 5000))
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 0))  # walking back: the newest goes
    assert ids(fake_redis, OLDER) == [*range(0, 1000), *range(2000, 4000)]


def test_a_range_by_time_fetches_its_first_trade_and_the_page_before(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = history
    keeper.backfill(Backfill("aggtrade_time", "BTCUSDT", 1_000_000 + 10 * 2500 - 5))
    assert [c[1] for c in exchange.calls] == [
        {"symbol": "BTCUSDT", "startTime": "1024995", "limit": "1000"},
        {"symbol": "BTCUSDT", "fromId": "1500", "limit": "1000"},
    ]
    assert ids(fake_redis, OLDER) == list(range(1500, 3500))


def at(n: int) -> int:
    return int(agg(n)["T"])


@pytest.fixture
def late(any_redis: redis.Redis) -> tuple[TradeHistory, Exchange]:
    """An exchange whose first aggregate trade is 1000 (as the simulator's are well above 0)."""
    exchange = Exchange(newest=5000, first=1000)
    return TradeHistory(any_redis, exchange, 3000), exchange  # type: ignore[arg-type]


def test_an_answer_from_above_its_fromid_marks_the_origin_and_nothing_below_is_asked_again(
    any_redis: redis.Redis, late: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = late
    append(any_redis, "extend", range(4001, 5001))
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 0))
    assert [c[1]["fromId"] for c in exchange.calls] == ["0"]
    assert ids(any_redis, OLDER) == list(range(1000, 2000))
    assert any_redis.get(ORIGIN) == b"1000"
    assert 3_600_000 < any_redis.pttl(ORIGIN) <= 7 * 24 * 3_600_000
    for reach in (0, 500, 999, 1000):  # held, or known not to exist: no call
        keeper.backfill(Backfill("aggtrade", "BTCUSDT", reach))
    assert len(exchange.calls) == 1
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 1800))  # partly held: from the first not held
    assert [c[1]["fromId"] for c in exchange.calls[1:]] == ["2000"]


def test_a_time_before_the_first_trade_marks_the_origin_once(
    any_redis: redis.Redis, late: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = late
    append(any_redis, "extend", range(4001, 5001))
    keeper.backfill(Backfill("aggtrade_time", "BTCUSDT", 0))  # startTime=0
    assert [c[1] for c in exchange.calls] == [
        {"symbol": "BTCUSDT", "startTime": "0", "limit": "1000"},
        {"symbol": "BTCUSDT", "fromId": "0", "limit": "1000"},  # the page before: there is none
    ]
    assert any_redis.get(ORIGIN) == b"1000"
    assert ids(any_redis, OLDER) == list(range(1000, 2000))
    for t in (0, 1, at(1000), at(1500) - 3):  # endTime=0 (asks from 1), a time in what is held
        keeper.backfill(Backfill("aggtrade_time", "BTCUSDT", t))
    assert len(exchange.calls) == 2
    keeper.backfill(Backfill("aggtrade_time", "BTCUSDT", at(2500)))  # beyond what is held
    assert len(exchange.calls) == 4


def test_the_page_before_a_time_is_not_fetched_when_it_is_held_or_cannot_exist(
    any_redis: redis.Redis, late: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = late
    any_redis.set(ORIGIN, 1000)
    keeper.backfill(Backfill("aggtrade_time", "BTCUSDT", 5))  # its first trade is the origin
    assert [c[1].get("startTime") for c in exchange.calls] == ["5"]
    keeper.backfill(Backfill("aggtrade_time", "BTCUSDT", at(2000)))  # 1999 is held now
    assert [c[1].get("startTime") for c in exchange.calls] == ["5", str(at(2000))]
    assert ids(any_redis, OLDER) == list(range(1000, 3000))


def test_a_symbol_with_fewer_trades_than_a_tail_keeps_is_whole_in_its_tail(
    any_redis: redis.Redis,
) -> None:
    exchange = Exchange(newest=5000, first=4500)
    keeper = TradeHistory(any_redis, exchange, 3000)  # type: ignore[arg-type]
    assert keeper.catch_up("aggtrade", "BTCUSDT", seed=True) is not None
    assert ids(any_redis, TAIL) == list(range(4500, 5001))
    assert any_redis.get(ORIGIN) == b"4500"
    assert keeper.catch_up("aggtrade", "BTCUSDT") is None  # nothing older to fill it with: no call
    keeper.backfill(Backfill("aggtrade", "BTCUSDT", 0))
    assert len(exchange.calls) == 1


def test_rest_failing_leaves_the_request_to_be_tried_again(
    fake_redis: redis.Redis, history: tuple[TradeHistory, Exchange]
) -> None:
    keeper, exchange = history
    exchange.fail = RestError("no answer", "http://exchange/api/v3/aggTrades")
    with pytest.raises(RestError):
        keeper.backfill(Backfill("aggtrade", "BTCUSDT", 10))
    assert not fake_redis.exists(OLDER)
