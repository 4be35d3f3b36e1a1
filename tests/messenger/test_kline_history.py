"""The messenger's kept candles: seeded once, appended from closed candles, and after a gap only
the missing candles are fetched, whatever order frames and fetches come in."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from contract.backfill import Backfill
from contract.klines import PAGE_TTL_MS, klines_key, origin_key, page_key, page_to_key, row_times
from messenger.kline_history import KlineHistory
from messenger.rest import RateLimited, RestError

MINUTE = 60_000
NOW_OPEN = int(time.time() * 1000) // MINUTE * MINUTE
FIRST = NOW_OPEN - 5000 * MINUTE  # the symbol's first candle


def row(open_time: int) -> list[Any]:
    price = f"{open_time // MINUTE % 1000}.00000000"
    return [
        open_time,
        price,
        price,
        price,
        price,
        "1.00000000",
        open_time + MINUTE - 1,
        "1.0",
        1,
        "0",
        "0",
        "0",
    ]


class Exchange:
    """Binance's klines over REST for one symbol, 1m, from FIRST to the open candle ``now``."""

    def __init__(self) -> None:
        self.now = NOW_OPEN
        self.calls: list[dict[str, str]] = []
        self.fail = False

    def get(self, path: str, params: dict[str, str]) -> Any:
        assert path == "/api/v3/klines"
        if self.fail:
            raise RestError("down")
        self.calls.append(params)
        limit = int(params.get("limit", "500"))
        opens = range(FIRST, self.now + 1, MINUTE)
        if "startTime" in params:
            chosen = [t for t in opens if t >= int(params["startTime"])][:limit]
        else:
            end = int(params.get("endTime", self.now))
            chosen = [t for t in opens if t <= end][-limit:]
        return [row(t) for t in chosen]


def frame(open_time: int, closed: bool) -> dict[str, Any]:
    r = row(open_time)
    return {
        "open_time": r[0], "close_time": r[6], "interval": "1m", "open": r[1], "high": r[2], "low": r[3],
        "close": r[4], "volume": r[5], "quote_volume": r[7], "trades": r[8], "taker_buy_base_volume": r[9],
        "taker_buy_quote_volume": r[10], "closed": closed,
    }  # fmt: skip


def carry(keeper: KlineHistory, series: set[tuple[str, str]]) -> None:
    """The messenger carries these series' streams and the exchange has confirmed them."""
    keeper.follow(series)
    for symbol, interval in series:
        keeper.streaming(symbol, interval)


def kept(client: redis.Redis) -> list[int]:
    return [row_times(m)[0] for m in client.zrange(klines_key("1m", "BTCUSDT"), 0, -1)]


def wait_for(what: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def exchange() -> Exchange:
    return Exchange()


@pytest.fixture
def history(real_redis: redis.Redis, exchange: Exchange) -> Any:
    keeper = KlineHistory(real_redis, exchange, keep=1000, cap=3000)  # type: ignore[arg-type]
    keeper.start()
    yield keeper
    keeper.stop()


@pytest.mark.redis
def test_a_new_series_is_seeded_with_one_call_then_kept_by_closed_candles(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    carry(history, {("BTCUSDT", "1m")})
    wait_for(lambda: len(kept(real_redis)) == 999)
    assert kept(real_redis)[-1] == NOW_OPEN - MINUTE  # closed ones only: the open one is the stream's
    assert len(exchange.calls) == 1
    history.frame("BTCUSDT", frame(NOW_OPEN, closed=False))
    history.frame("BTCUSDT", frame(NOW_OPEN, closed=True))
    exchange.now += MINUTE
    history.frame("BTCUSDT", frame(NOW_OPEN + MINUTE, closed=False))
    wait_for(lambda: kept(real_redis)[-1] == NOW_OPEN)
    assert len(kept(real_redis)) == 999  # trimmed to length
    assert len(exchange.calls) == 1


def calls_for(exchange: Exchange, symbol: str) -> list[dict[str, str]]:
    return [c for c in exchange.calls if c["symbol"] == symbol]


@pytest.mark.redis
def test_a_new_series_is_seeded_only_once_its_stream_is_live(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    """Seeded before the exchange confirmed the stream, a candle closing in between never comes on
    it and costs a second call (CI caught that); so the seed waits for the confirmation."""
    history.follow({("BTCUSDT", "1m")})
    history.follow({("BTCUSDT", "1m"), ("ETHBTC", "1m")})  # had BTCUSDT been due, it would go first
    history.streaming("ETHBTC", "1m")
    wait_for(lambda: len(calls_for(exchange, "ETHBTC")) == 1)
    assert calls_for(exchange, "BTCUSDT") == []
    exchange.now += MINUTE  # a candle closes before the subscription takes hold
    history.streaming("BTCUSDT", "1m")
    wait_for(lambda: len(kept(real_redis)) == 999)
    assert kept(real_redis)[-1] == NOW_OPEN  # the candle that closed meanwhile is in the seed
    history.frame("BTCUSDT", frame(NOW_OPEN + MINUTE, closed=False))  # the stream's first frame follows on
    history.frame("BTCUSDT", frame(NOW_OPEN + MINUTE, closed=True))
    exchange.now += MINUTE
    wait_for(lambda: kept(real_redis)[-1] == NOW_OPEN + MINUTE)
    assert len(calls_for(exchange, "BTCUSDT")) == 1


@pytest.mark.redis
def test_a_confirmation_before_the_follow_seeds_at_once_and_a_series_let_go_of_waits_again(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    history.streaming("BTCUSDT", "1m")  # the reply came before the plan's follow() ran
    history.follow({("BTCUSDT", "1m")})
    wait_for(lambda: len(kept(real_redis)) == 999)
    history.follow(set())  # let go of: its stream is unsubscribed
    real_redis.delete(klines_key("1m", "BTCUSDT"))
    history.follow({("BTCUSDT", "1m")})  # carried again: a new subscription, not yet confirmed
    history.follow({("BTCUSDT", "1m"), ("ETHBTC", "1m")})
    history.streaming("ETHBTC", "1m")
    wait_for(lambda: len(calls_for(exchange, "ETHBTC")) == 1)
    assert len(calls_for(exchange, "BTCUSDT")) == 1 and kept(real_redis) == []
    history.streaming("BTCUSDT", "1m")
    wait_for(lambda: len(kept(real_redis)) == 999)
    assert len(calls_for(exchange, "BTCUSDT")) == 2


@pytest.mark.redis
def test_a_backfill_asked_for_before_the_stream_is_live_waits_for_the_seed(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    """The server's first request for a series asks for its stream and an older range at once: the
    range waits for the seed (the server asks again), it does not seed ahead of the stream."""
    history.follow({("BTCUSDT", "1m")})
    history.backfill(Backfill("kline_1m", "BTCUSDT", NOW_OPEN - 2500 * MINUTE))
    assert exchange.calls == []
    history.streaming("BTCUSDT", "1m")
    wait_for(lambda: len(kept(real_redis)) == 999)
    history.backfill(Backfill("kline_1m", "BTCUSDT", NOW_OPEN - 1500 * MINUTE))  # asked again: reached
    assert kept(real_redis)[0] <= NOW_OPEN - 1500 * MINUTE
    assert [c.get("endTime") is not None for c in exchange.calls] == [False, True]


@pytest.mark.redis
def test_a_sync_due_when_its_series_was_let_go_of_waits_for_the_new_stream(
    real_redis: redis.Redis, exchange: Exchange
) -> None:
    """Live, due for a sync that has not run yet (REST busy), let go of, then carried again: its new
    subscription is not confirmed, so the old due sync must not seed it ahead of that."""
    keeper = KlineHistory(real_redis, exchange, keep=1000, cap=3000)  # type: ignore[arg-type]  # not started
    carry(keeper, {("BTCUSDT", "1m")})
    keeper.follow(set())
    keeper.follow({("BTCUSDT", "1m")})
    keeper._sync_due()
    assert exchange.calls == []
    keeper.streaming("BTCUSDT", "1m")
    keeper._sync_due()
    assert len(exchange.calls) == 1 and len(kept(real_redis)) == 999
    keeper._sync_due()
    assert len(exchange.calls) == 1


@pytest.mark.redis
def test_after_a_gap_only_the_missing_candles_are_fetched(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    carry(history, {("BTCUSDT", "1m")})
    wait_for(lambda: len(kept(real_redis)) == 999)
    exchange.now += 7 * MINUTE  # seven candles closed while the connection was away
    history.frame("BTCUSDT", frame(exchange.now, closed=False))
    wait_for(lambda: kept(real_redis)[-1] == exchange.now - MINUTE)
    assert exchange.calls[1:] == [{"symbol": "BTCUSDT", "interval": "1m", "startTime": str(NOW_OPEN),
                                   "limit": "1000"}]  # fmt: skip
    got = kept(real_redis)
    assert got == list(range(got[0], got[-1] + 1, MINUTE))


@pytest.mark.redis
def test_a_series_kept_from_before_fetches_only_what_it_missed(
    exchange: Exchange, real_redis: redis.Redis
) -> None:
    first = KlineHistory(real_redis, exchange, keep=1000, cap=3000)  # type: ignore[arg-type]
    first.start()
    carry(first, {("BTCUSDT", "1m")})
    wait_for(lambda: len(kept(real_redis)) == 999)
    first.stop()
    exchange.now += 3 * MINUTE  # the messenger was down three minutes
    second = KlineHistory(real_redis, exchange, keep=1000, cap=3000)  # type: ignore[arg-type]
    second.start()
    try:
        carry(second, {("BTCUSDT", "1m")})
        wait_for(lambda: kept(real_redis)[-1] == exchange.now - MINUTE)
        assert len(exchange.calls) == 2
        assert exchange.calls[1]["startTime"] == str(NOW_OPEN)
    finally:
        second.stop()


@pytest.mark.redis
def test_a_backfill_reaches_back_one_call_per_thousand_and_marks_the_origin(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    carry(history, {("BTCUSDT", "1m")})
    wait_for(lambda: len(kept(real_redis)) == 999)
    calls = len(exchange.calls)
    history.backfill(Backfill("kline_1m", "BTCUSDT", NOW_OPEN - 2500 * MINUTE))
    assert kept(real_redis)[0] <= NOW_OPEN - 2500 * MINUTE
    assert len(exchange.calls) - calls == 2
    assert not real_redis.exists(origin_key("1m", "BTCUSDT"))
    history.backfill(Backfill("kline_1m", "BTCUSDT", FIRST - 100 * MINUTE))  # past the cap: 3,000
    assert kept(real_redis)[0] == NOW_OPEN - 2999 * MINUTE
    assert len(exchange.calls) - calls == 3


@pytest.mark.redis
def test_a_backfill_before_the_first_candle_marks_the_origin(
    exchange: Exchange, real_redis: redis.Redis
) -> None:
    keeper = KlineHistory(real_redis, exchange, keep=1000, cap=10_000)  # type: ignore[arg-type]
    keeper.backfill(Backfill("kline_1m", "BTCUSDT", FIRST - 100 * MINUTE))  # seeds first: nothing kept
    got = kept(real_redis)
    assert got == list(range(FIRST, NOW_OPEN, MINUTE))
    assert real_redis.exists(origin_key("1m", "BTCUSDT"))
    assert len(exchange.calls) == 6  # the seed, then 4,000 older candles a thousand a call


@pytest.mark.redis
def test_rest_down_leaves_the_series_to_be_synced_later(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    exchange.fail = True
    carry(history, {("BTCUSDT", "1m")})
    wait_for(lambda: history.failures > 0)
    exchange.fail = False
    wait_for(lambda: len(kept(real_redis)) == 999, timeout_s=10)


@pytest.mark.redis
def test_a_range_too_old_to_keep_in_line_is_fetched_as_a_page_of_closed_candles(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    carry(history, {("BTCUSDT", "1m")})
    wait_for(lambda: len(kept(real_redis)) == 999)
    calls = len(exchange.calls)
    history.backfill(Backfill("kline_1m", "BTCUSDT", 0))  # where python-binance looks for the first candle
    assert len(exchange.calls) - calls == 1
    page = orjson.loads(real_redis.get(page_key("1m", "BTCUSDT", 0)) or b"null")
    assert [r[0] for r in page] == list(range(FIRST, FIRST + 1000 * MINUTE, MINUTE))
    assert 0 < real_redis.pttl(page_key("1m", "BTCUSDT", 0)) <= PAGE_TTL_MS
    assert len(kept(real_redis)) == 999  # the kept candles are left as they were


@pytest.mark.redis
def test_a_frame_that_looked_like_a_gap_costs_no_call_when_the_closed_candle_was_on_its_way(
    exchange: Exchange, real_redis: redis.Redis
) -> None:
    keeper = KlineHistory(real_redis, exchange, keep=1000, cap=3000)  # type: ignore[arg-type]
    carry(keeper, {("BTCUSDT", "1m")})
    keeper._sync_due()  # the seed (the worker's thread is not started: steps run by hand)
    calls = len(exchange.calls)
    # The next window's first frame is handed over before the worker appended the closed one.
    keeper.frame("BTCUSDT", frame(NOW_OPEN + MINUTE, closed=False))
    keeper._closed.append((("BTCUSDT", "1m"), row(NOW_OPEN)))
    keeper._append_closed()
    keeper._sync_due()
    assert len(exchange.calls) == calls
    assert kept(real_redis)[-1] == NOW_OPEN


class Paused(Exchange):
    def get(self, path: str, params: dict[str, str]) -> Any:
        if params["symbol"] == "ETHBTC":
            raise RateLimited(30, "HTTP 429")
        return super().get(path, params)


@pytest.mark.redis
def test_closed_candles_are_appended_while_rest_is_paused(real_redis: redis.Redis) -> None:
    exchange = Paused()
    keeper = KlineHistory(real_redis, exchange, keep=1000, cap=3000)  # type: ignore[arg-type]
    keeper.start()
    try:
        carry(keeper, {("BTCUSDT", "1m")})
        wait_for(lambda: len(kept(real_redis)) == 999)
        carry(keeper, {("BTCUSDT", "1m"), ("ETHBTC", "1m")})  # its seed is refused: REST pauses 30 s
        wait_for(lambda: keeper.failures > 0)
        keeper.frame("BTCUSDT", frame(NOW_OPEN, closed=True))
        wait_for(lambda: kept(real_redis)[-1] == NOW_OPEN)
    finally:
        keeper.stop()


@pytest.mark.redis
def test_candles_up_to_an_old_end_come_as_a_page_fetched_once(
    history: KlineHistory, exchange: Exchange, real_redis: redis.Redis
) -> None:
    carry(history, {("BTCUSDT", "1m")})
    wait_for(lambda: len(kept(real_redis)) == 999)
    calls = len(exchange.calls)
    end = FIRST + 1500 * MINUTE
    history.backfill(Backfill("klineto_1m", "BTCUSDT", end))
    history.backfill(Backfill("klineto_1m", "BTCUSDT", end))  # asked again: the page is there
    assert exchange.calls[calls:] == [
        {"symbol": "BTCUSDT", "interval": "1m", "endTime": str(end), "limit": "1000"}
    ]
    page = orjson.loads(real_redis.get(page_to_key("1m", "BTCUSDT", end)) or b"null")
    assert [r[0] for r in page] == list(range(end - 999 * MINUTE, end + 1, MINUTE))
    history.backfill(Backfill("klineto_1m", "BTCUSDT", 1000))  # before the first candle: an empty page
    assert orjson.loads(real_redis.get(page_to_key("1m", "BTCUSDT", 1000)) or b"null") == []


def test_following_other_series_while_candles_close_never_breaks_the_main_loop(
    fake_redis: redis.Redis, exchange: Exchange
) -> None:
    """follow() runs on the main loop while closed candles and syncs move each series on, on other
    threads: a series' next open time set outside the lock while follow() went over them raised
    "dictionary changed size during iteration" in the main loop, which stopped the messenger."""
    keeper = KlineHistory(fake_redis, exchange, keep=1000, cap=3000)  # type: ignore[arg-type]
    names = [(f"S{i}USDT", "1m") for i in range(400)]
    errors: list[BaseException] = []
    done = threading.Event()

    def candles_close() -> None:
        try:
            while not done.is_set():
                for series in names:
                    keeper._next(series, 60_000)  # as a sync or an append does, on the keeper's thread
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=candles_close)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            carry(keeper, set(names))
            carry(keeper, set(names[::2]))  # half of them let go of: their next open times go
    finally:
        done.set()
        thread.join()
    assert errors == []
