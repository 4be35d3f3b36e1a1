"""The simulator serves its history as Binance does: klines, trade lists, rolling tickers, their streams.

Each view is checked against another the simulator offers (a closed kline frame against the REST
row and the trades streamed meanwhile, a rolling ticker against the trade list), as the tests of
other components will trust them.
"""

from __future__ import annotations

import itertools
import time
import urllib.parse
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
import websocket

from simulator.record import Timeline
from tests.processes import Simulator, http, wait_until

DAY_MS, HOUR_MS = 86_400_000, 3_600_000
SimFactory = Callable[..., Simulator]


@pytest.fixture
def connect() -> Iterator[Callable[[Simulator, str], websocket.WebSocket]]:
    opened: list[websocket.WebSocket] = []

    def make(sim: Simulator, path: str) -> websocket.WebSocket:
        ws = websocket.WebSocket(skip_utf8_validation=True)
        opened.append(ws)
        ws.connect(sim.ws_url + path, timeout=5)
        return ws

    yield make
    for ws in opened:
        ws.close(timeout=0.1)
        ws.shutdown()


def get(sim: Simulator, path: str, **params: Any) -> tuple[int, dict[str, str], Any]:
    return http("GET", f"{sim.rest_url}/api/v3/{path}?{urllib.parse.urlencode(params)}")


def ok(sim: Simulator, path: str, **params: Any) -> Any:
    status, _, body = get(sim, path, **params)
    assert status == 200, (path, params, body)
    return body


def frames(ws: websocket.WebSocket, seconds: float) -> list[dict[str, Any]]:
    """Every combined-stream frame for a while."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ws.settimeout(left)
        try:
            opcode, frame = ws.recv_data_frame(True)
        except websocket.WebSocketTimeoutException:
            break
        if opcode == websocket.ABNF.OPCODE_TEXT:
            out.append(orjson.loads(frame.data))
    return out


def test_klines_ranges_limits_and_errors_are_binances(sim: Simulator) -> None:
    before = int(time.time() * 1000)
    latest = ok(sim, "klines", symbol="ETHBTC", interval="1m", limit=5)
    after = int(time.time() * 1000)
    assert len(latest) == 5 and before - before % 60_000 <= latest[-1][0] <= after  # ends with the open one
    assert [r[0] for r in latest] == [latest[0][0] + k * 60_000 for k in range(5)]
    for row in latest:
        assert len(row) == 12 and row[6] == row[0] + 59_999 and row[11] == "0"
        assert [type(x) for x in row] == [int, str, str, str, str, str, int, str, int, str, str, str]
    assert len(ok(sim, "klines", symbol="ETHBTC", interval="1m")) == 500  # the default limit

    past = ok(sim, "klines", symbol="ETHBTC", interval="1h", endTime=before - 2 * DAY_MS, limit=6)
    assert past[-1][0] <= before - 2 * DAY_MS < past[-1][0] + HOUR_MS  # endTime alone: the last ones
    starts = [r[0] for r in past]
    assert ok(sim, "klines", symbol="ETHBTC", interval="1h", startTime=starts[1] + 1, limit=2) == past[2:4]
    both = ok(sim, "klines", symbol="ETHBTC", interval="1h", startTime=starts[1], endTime=starts[4] - 1)
    assert both == past[1:4]  # open times from startTime to endTime, both inclusive
    assert ok(sim, "uiKlines", symbol="ETHBTC", interval="1h", startTime=starts[0], limit=6) == past

    [first] = ok(sim, "historicalTrades", symbol="ETHBTC", fromId=0, limit=1)  # the very first trade
    assert first["time"] <= before - 35 * DAY_MS + HOUR_MS  # at least 35 days of history
    day = ok(sim, "klines", symbol="ETHBTC", interval="1d", startTime=0, limit=2)
    assert day[0][0] == first["time"] - first["time"] % DAY_MS and day[0][1] == first["price"]
    assert ok(sim, "klines", symbol="ETHBTC", interval="1d", endTime=first["time"] - DAY_MS) == []
    month = ok(sim, "klines", symbol="ETHBTC", interval="1M", limit=3)
    assert 2 <= len(month) <= 3  # the month of the first trade, 35 days back, and the next one or two
    assert all(r[6] - r[0] + 1 in [d * DAY_MS for d in (28, 29, 30, 31)] for r in month)

    eight = ok(sim, "klines", symbol="ETHBTC", interval="1d", timeZone="8", limit=3)
    assert all(r[0] % DAY_MS == 16 * HOUR_MS for r in eight)  # local midnight, in UTC
    quarter = ok(sim, "klines", symbol="ETHBTC", interval="1h", timeZone="05:45", limit=3)
    assert all(r[0] % HOUR_MS == 15 * 60_000 for r in quarter)

    errors: list[tuple[dict[str, Any], int]] = [
        ({"interval": "1x"}, -1120), ({}, -1102), ({"interval": "1m", "limit": 1001}, -1130),
        ({"interval": "1m", "limit": 0}, -1130), ({"interval": "1m", "limit": "ten"}, -1100),
        ({"interval": "1m", "startTime": "yesterday"}, -1100), ({"interval": "1m", "timeZone": "15"}, -1130),
        ({"interval": "1m", "timeZone": "-12:30"}, -1130),
    ]  # fmt: skip
    for params, code in errors:
        status, _, err = get(sim, "klines", symbol="ETHBTC", **params)
        assert (status, err["code"]) == (400, code), params
    status, _, err = get(sim, "klines", symbol="NOPEBTC", interval="1m")
    assert (status, err) == (400, {"code": -1121, "msg": "Invalid symbol."})


def test_a_closed_kline_frame_is_the_rest_row_and_the_trades_streamed(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/stream?streams=btcusdt@trade/btcusdt@kline_1s/btcusdt@kline_1d@+08:00")
    seen = frames(ws, 4.5)
    trades = [f["data"] for f in seen if f["stream"] == "btcusdt@trade"]
    closed = [f["data"]["k"] for f in seen if f["stream"] == "btcusdt@kline_1s" and f["data"]["k"]["x"]]
    assert len(closed) >= 3
    assert [k["t"] for k in closed] == [closed[0]["t"] + 1000 * n for n in range(len(closed))]  # each, once
    busy = 0
    for k in closed[1:]:  # the first window may have begun before the trade stream did
        [row] = ok(sim, "klines", symbol="BTCUSDT", interval="1s", startTime=k["t"], limit=1)
        assert row == [
            k["t"],
            k["o"],
            k["h"],
            k["l"],
            k["c"],
            k["v"],
            k["T"],
            k["q"],
            k["n"],
            k["V"],
            k["Q"],
            "0",
        ]
        inside = [t for t in trades if k["t"] <= t["T"] <= k["T"]]
        assert k["n"] == len(inside)
        if inside:
            busy += 1
            assert (k["f"], k["L"], k["o"], k["c"]) == (
                inside[0]["t"],
                inside[-1]["t"],
                inside[0]["p"],
                inside[-1]["p"],
            )
            assert Decimal(k["v"]) == sum(Decimal(t["q"]) for t in inside)
        else:
            assert (k["f"], k["L"], k["o"], k["h"], k["l"]) == (-1, -1, k["c"], k["c"], k["c"])
    assert busy >= 1
    local = [f["data"]["k"] for f in seen if f["stream"] == "btcusdt@kline_1d@+08:00"]
    assert local and local[-1]["i"] == "1d" and local[-1]["t"] % DAY_MS == 16 * HOUR_MS
    [row] = ok(sim, "klines", symbol="BTCUSDT", interval="1d", timeZone="8", limit=1)
    assert (row[0], row[1]) == (local[-1]["t"], local[-1]["o"])


def test_trade_lists_by_id_and_time_run_on_into_the_live_trades(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/stream?streams=ethbtc@aggTrade/ethbtc@trade")
    seen = frames(ws, 1.0)
    agg = next(f["data"] for f in seen if f["stream"] == "ethbtc@aggTrade")
    trade = next(f["data"] for f in seen if f["stream"] == "ethbtc@trade")

    aggs = ok(sim, "aggTrades", symbol="ETHBTC", fromId=agg["a"] - 300, limit=400)
    assert len(aggs) > 300 and [a["a"] for a in aggs] == list(
        range(agg["a"] - 300, agg["a"] - 300 + len(aggs))
    )
    assert all(b["f"] == a["l"] + 1 and b["T"] >= a["T"] for a, b in itertools.pairwise(aggs))
    assert all(a["a"] not in range(a["f"], a["l"] + 1) for a in aggs)
    assert any(a["l"] > a["f"] for a in aggs)  # the past has multi-fill taker orders
    [same] = [a for a in aggs if a["a"] == agg["a"]]
    assert {k: same[k] for k in "pqflTm"} == {k: agg[k] for k in "pqflTm"}

    listed = ok(sim, "historicalTrades", symbol="ETHBTC", fromId=trade["t"] - 200, limit=300)
    assert len(listed) > 200 and [t["id"] for t in listed] == list(
        range(trade["t"] - 200, trade["t"] - 200 + len(listed))
    )
    [again] = [t for t in listed if t["id"] == trade["t"]]
    assert (again["price"], again["qty"], again["time"], again["isBuyerMaker"]) == (
        trade["p"], trade["q"], trade["T"], trade["m"])  # fmt: skip

    start = int(time.time() * 1000) - 2 * DAY_MS
    window = ok(sim, "aggTrades", symbol="ETHBTC", startTime=start, endTime=start + 600_000, limit=1000)
    assert window and all(start <= a["T"] <= start + 600_000 for a in window)
    [before] = ok(sim, "aggTrades", symbol="ETHBTC", endTime=start - 1, limit=1)
    assert before["a"] == window[0]["a"] - 1 and before["T"] < start  # nothing in between was left out
    assert ok(sim, "aggTrades", symbol="ETHBTC", startTime=start, limit=3) == window[:3]
    last_three = ok(sim, "aggTrades", symbol="ETHBTC", endTime=window[-1]["T"], limit=3)
    assert last_three[-1]["a"] >= window[-1]["a"] and len(last_three) == 3
    status, _, err = get(sim, "aggTrades", symbol="ETHBTC", fromId=agg["a"], startTime=start)
    assert (status, err["code"]) == (400, -1128)

    quiet = ok(sim, "historicalTrades", symbol="NEOBTC")  # nobody moves it: its history's end, stable
    assert len(quiet) == 500 and quiet == ok(sim, "trades", symbol="NEOBTC")
    assert [t["id"] for t in quiet] == list(range(quiet[0]["id"], quiet[0]["id"] + 500))


def test_the_rolling_ticker_is_every_trade_in_its_window(sim: Simulator, connect: Any) -> None:
    sim.market(quiet=["LTCBTC"])
    doc = ok(sim, "ticker", symbol="LTCBTC", windowSize="15m")
    assert doc["openTime"] % 60_000 == 0 and 15 * 60_000 <= doc["closeTime"] - doc["openTime"] < 16 * 60_000
    trades = ok(sim, "historicalTrades", symbol="LTCBTC", fromId=doc["firstId"], limit=doc["count"])
    assert trades[-1]["id"] == doc["lastId"] and doc["openTime"] <= trades[0]["time"]
    [before] = ok(sim, "historicalTrades", symbol="LTCBTC", fromId=doc["firstId"] - 1, limit=1)
    assert before["time"] < doc["openTime"]  # the first one in the window is the first at or after openTime
    prices = [Decimal(t["price"]) for t in trades]
    volume = sum((Decimal(t["qty"]) for t in trades), Decimal(0))
    quote = sum((Decimal(t["quoteQty"]) for t in trades), Decimal(0))
    assert (doc["openPrice"], doc["lastPrice"]) == (trades[0]["price"], trades[-1]["price"])
    assert (Decimal(doc["highPrice"]), Decimal(doc["lowPrice"])) == (max(prices), min(prices))
    assert (Decimal(doc["volume"]), Decimal(doc["quoteVolume"])) == (volume, quote)
    assert Decimal(doc["weightedAvgPrice"]) == (quote / volume).quantize(Decimal("1E-8"), "ROUND_DOWN")
    assert Decimal(doc["priceChange"]) == prices[-1] - prices[0]

    day = ok(sim, "ticker", symbol="LTCBTC")  # the default window: 1d
    assert DAY_MS <= day["closeTime"] - day["openTime"] < DAY_MS + 60_000
    mini = ok(sim, "ticker", symbols='["LTCBTC","ETHBTC"]', windowSize="7d", type="MINI")
    assert [m["symbol"] for m in mini] == ["LTCBTC", "ETHBTC"] and "priceChange" not in mini[0]
    for params, code in [({}, -1102), ({"symbol": "LTCBTC", "windowSize": "60m"}, -1100),
                         ({"symbol": "LTCBTC", "type": "HUGE"}, -1139), ({"symbol": "NOPEBTC"}, -1121),
                         ({"symbols": orjson.dumps(["LTCBTC"] * 101).decode()}, -1101)]:  # fmt: skip
        status, _, err = get(sim, "ticker", **params)
        assert (status, err["code"]) == (400, code), params

    ws = connect(sim, "/stream?streams=ltcbtc@ticker_1h")  # quiet: its frames change only by the clock

    def frame_and_rest_agree() -> bool:
        event = frames(ws, 1.1)[-1]["data"]
        rest = ok(sim, "ticker", symbol="LTCBTC", windowSize="1h")
        assert event["e"] == "1hTicker" and set(event) == set("eEspPwohlcvqOCFLn")
        names = (
            "openPrice",
            "highPrice",
            "lowPrice",
            "lastPrice",
            "volume",
            "quoteVolume",
            "firstId",
            "count",
        )
        return event["O"] == rest["openTime"] and [event[x] for x in "ohlcvqFn"] == [rest[n] for n in names]

    wait_until(frame_and_rest_agree, 10)


def test_every_request_is_recorded_with_its_weight(sim: Simulator) -> None:
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
    names = [s["symbol"] for s in info["symbols"] if s["status"] == "TRADING"][:51]
    calls: list[tuple[str, dict[str, Any], int]] = [
        ("klines", {"symbol": "BNBBTC", "interval": "1h", "limit": 3}, 2),
        ("uiKlines", {"symbol": "BNBBTC", "interval": "1h", "limit": 3}, 2),
        ("aggTrades", {"symbol": "BNBBTC", "limit": 3}, 4),
        ("trades", {"symbol": "BNBBTC", "limit": 3}, 25),
        ("historicalTrades", {"symbol": "BNBBTC", "limit": 3}, 25),
        ("ticker", {"symbol": "BNBBTC"}, 4),
        ("ticker", {"symbols": orjson.dumps(names[:2]).decode()}, 8),
        ("ticker", {"symbols": orjson.dumps(names[:50]).decode()}, 200),
        ("ticker", {"symbols": orjson.dumps(names).decode()}, 200),  # capped past 50 symbols
    ]
    used = []
    for path, params, _ in calls:
        status, headers, _ = get(sim, path, **params)
        assert status == 200
        used.append(int(headers["X-MBX-USED-WEIGHT-1M"]))
    weights = [w for _, _, w in calls]
    assert [b - a for a, b in itertools.pairwise(used)] == weights[1:]
    state = sim.state()
    recorded = state["rest_requests"][-len(calls) :]
    assert [r["weight"] for r in recorded] == weights
    assert [r["path"].split("?")[0] for r in recorded] == [f"/api/v3/{p}" for p, _, _ in calls]
    assert state["rest_totals"]["/api/v3/ticker"] == {"calls": 4, "weight": 412}


def test_the_recorder_keeps_closed_candles_and_rest_answers(sim_factory: SimFactory, connect: Any) -> None:
    sim = sim_factory("--record", "--rate", "20")
    ws = connect(sim, "/stream?streams=bnbbtc@kline_1s/bnbbtc@ticker_1h")
    frames(ws, 2.5)
    [row] = ok(sim, "klines", symbol="BNBBTC", interval="1s", limit=1)
    rolling = ok(sim, "ticker", symbol="BNBBTC", windowSize="1h")
    ok(
        sim, "klines", symbol="BNBBTC", interval="1s", endTime=row[0] - 10_000, limit=1
    )  # the past: not a value
    entries = sim.recorded()["entries"]
    streams = [e[1] for e in entries]
    assert any(e[1] == "bnbbtc@kline_1s" and e[2]["k"]["x"] for e in entries)
    assert streams.count("rest:bnbbtc@kline_1s") == 1 and "rest:bnbbtc@ticker_1h" in streams
    timeline = Timeline()
    timeline.add(entries)
    now = int(time.time() * 1000)
    content = tuple(rolling[n] for n in ("lastPrice", "openPrice", "highPrice", "lowPrice", "volume",
                                         "quoteVolume", "count"))  # fmt: skip
    assert timeline.judge("bnbbtc@ticker_1h", None, content, now - 5000, now).sent
    kline = (row[0], row[1], row[2], row[3], row[4], row[5], row[8])
    assert timeline.judge("bnbbtc@kline_1s", None, kline, now - 5000, now).sent
