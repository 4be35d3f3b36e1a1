"""The simulator's record of what it published, and the timeline a test's oracle builds from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import websocket

from simulator.record import Recorder, Timeline
from tests.processes import Simulator, http, wait_until

SimFactory = Callable[..., Simulator]


def book(u: int, bid: str = "1.0", ask: str = "2.0") -> dict[str, Any]:
    return {"u": u, "s": "BTCUSDT", "b": bid, "B": "1", "a": ask, "A": "1"}


def value(doc: dict[str, Any]) -> tuple[Any, ...]:
    return doc["b"], doc["B"], doc["a"], doc["A"]


def entries(recorder: Recorder, since: int = 0, limit: int = 1000) -> dict[str, Any]:
    dump: dict[str, Any] = orjson.loads(recorder.dump(since, limit))
    return dump


# -- the log ---------------------------------------------------------------------------


def test_the_log_is_read_from_a_cursor_and_counts_what_fell_off_before_it_was_read() -> None:
    recorder = Recorder(limit=3)
    for n in range(5):
        recorder.sent("btcusdt@bookTicker", orjson.dumps(book(n)))
    first = entries(recorder)
    assert (first["lost"], first["next"]) == (2, 5)
    assert [e[2]["u"] for e in first["entries"]] == [2, 3, 4]
    assert entries(recorder, since=5) == {"next": 5, "lost": 0, "entries": []}
    one = entries(recorder, since=3, limit=1)
    assert (one["lost"], one["next"], [e[2]["u"] for e in one["entries"]]) == (0, 4, [3])


def test_frames_rest_answers_and_departures_each_have_their_entry() -> None:
    recorder = Recorder()
    recorder.sent("btcusdt@bookTicker", b'{"u":1}')
    recorder.answered("btcusdt@avgPrice", {"w": "1.5", "T": 7})
    recorder.left("btcusdt@bookTicker")
    got = entries(recorder)["entries"]
    assert [(stream, payload) for _, stream, payload in got] == [
        ("btcusdt@bookTicker", {"u": 1}),
        ("rest:btcusdt@avgPrice", {"w": "1.5", "T": 7}),
        ("btcusdt@bookTicker", None),
    ]
    assert all(isinstance(at, int) and at > 1_600_000_000_000 for at, _, _ in got)


# -- the timeline ----------------------------------------------------------------------


def test_a_value_is_current_until_a_newer_one_is_published() -> None:
    timeline = Timeline()
    old, new = book(1, "1.0"), book(2, "1.1")
    timeline.add([[1000, "btcusdt@bookTicker", old], [2000, "btcusdt@bookTicker", new]])
    stale = timeline.judge("btcusdt@bookTicker", 1, value(old), 2500, 2510)
    assert (stale.sent, stale.published_ms, stale.superseded_ms, stale.stale_ms) == (True, 1000, 2000, 500)
    assert timeline.judge("btcusdt@bookTicker", 1, value(old), 1900, 2100).stale_ms == 0  # read in time
    assert timeline.judge("btcusdt@bookTicker", 2, value(new), 9000, 9001).superseded_ms is None
    # An update id with other prices, or a value answered before it was published: never sent.
    assert not timeline.judge("btcusdt@bookTicker", 2, value(old), 2500, 2510).sent
    assert not timeline.judge("btcusdt@bookTicker", 2, value(new), 1500, 1600).sent


def test_a_stream_left_by_its_last_subscriber_supersedes_its_value_until_published_again() -> None:
    timeline = Timeline()
    doc = book(7)
    timeline.add([[1000, "btcusdt@bookTicker", doc], [3000, "btcusdt@bookTicker", None]])
    assert timeline.judge("btcusdt@bookTicker", 7, value(doc), 8000, 8001).stale_ms == 5000
    timeline.add([[9000, "rest:btcusdt@bookTicker", doc]])  # the same value, answered again
    assert timeline.judge("btcusdt@bookTicker", None, value(doc), 9500, 9501).stale_ms == 0
    assert timeline.judge("btcusdt@bookTicker", 7, value(doc), 8000, 8001).stale_ms == 5000


def test_an_older_update_resent_is_sent_but_never_current() -> None:
    timeline = Timeline()
    newer, older = book(5, "1.5"), book(3, "1.3")
    timeline.add([[1000, "btcusdt@bookTicker", newer], [1100, "btcusdt@bookTicker", older]])
    assert timeline.judge("btcusdt@bookTicker", 5, value(newer), 5000, 5001).superseded_ms is None
    resent = timeline.judge("btcusdt@bookTicker", 3, value(older), 1300, 1301)
    assert (resent.sent, resent.stale_ms) == (True, 200)


def test_periodic_pushes_of_an_unchanged_value_do_not_supersede_it() -> None:
    timeline = Timeline()
    avg = {"e": "avgPrice", "w": "10.0", "T": 5}
    timeline.add([[1000 * n, "btcusdt@avgPrice", {**avg, "E": 1000 * n}] for n in range(1, 6)])
    verdict = timeline.judge("btcusdt@avgPrice", None, ("10.0", 5), 9000, 9001)
    assert (verdict.published_ms, verdict.superseded_ms) == (1000, None)


def test_a_rest_answer_counts_for_every_stream_it_can_seed() -> None:
    timeline = Timeline()
    depth = {"lastUpdateId": 9, "bids": [["1.0", "2"], ["0.9", "3"]], "asks": [["1.1", "4"]]}
    ticker = dict.fromkeys("cohlvqbBaA", "1.0") | {"n": 3, "E": 1, "O": 2, "C": 3}
    timeline.add([[1000, "rest:ethbtc@depth", depth], [1000, "rest:ethbtc@ticker", ticker]])
    top = (("1.0", "2"), ("1.1", "4"))
    for stream in ("ethbtc@depth5@100ms", "ethbtc@depth10", "ethbtc@depth20@100ms"):
        assert timeline.judge(stream, 9, top, 2000, 2001).sent, stream
    assert timeline.judge("ethbtc@ticker", None, (*["1.0"] * 10, 3), 2000, 2001).sent
    assert timeline.judge("ethbtc@miniTicker", None, ("1.0",) * 6, 2000, 2001).sent


# -- in the running simulator ----------------------------------------------------------


@pytest.fixture
def recording(sim_factory: SimFactory) -> Simulator:
    return sim_factory("--rate", "20", "--record")


def read_frames(ws: websocket.WebSocket, n: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while len(frames) < n:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            frames.append(orjson.loads(frame.data))
    return frames


def test_the_simulator_records_what_it_sent_what_rest_answered_and_who_left(recording: Simulator) -> None:
    ws = websocket.create_connection(recording.ws_url + "/ws/btcusdt@bookTicker", timeout=5)
    try:
        frames = read_frames(ws, 5)
        _, _, answer = http("GET", f"{recording.rest_url}/api/v3/ticker/bookTicker?symbol=BTCUSDT")
    finally:
        ws.close()

    def departed() -> dict[str, Any] | None:
        dump = recording.recorded()
        return dump if dump["entries"] and dump["entries"][-1][2] is None else None

    dump = wait_until(departed, 5, what="the departure")
    assert dump["lost"] == 0
    mine = [(stream, payload) for _, stream, payload in dump["entries"] if "btcusdt@bookTicker" in stream]
    sent = [payload for stream, payload in mine if stream == "btcusdt@bookTicker" and payload is not None]
    assert sent[: len(frames)] == frames  # every frame, as sent
    [rest] = [payload for stream, payload in mine if stream == "rest:btcusdt@bookTicker"]
    assert (rest["b"], rest["B"], rest["a"], rest["A"]) == (
        answer["bidPrice"], answer["bidQty"], answer["askPrice"], answer["askQty"])  # fmt: skip
    assert mine[-1] == ("btcusdt@bookTicker", None)
    assert recording.recorded(since=dump["next"])["entries"] == []


def test_every_rest_seed_is_recorded_as_the_value_its_stream_would_carry(recording: Simulator) -> None:
    base = f"{recording.rest_url}/api/v3"
    trades = http("GET", f"{base}/trades?symbol=ETHBTC&limit=3")[2]
    aggs = http("GET", f"{base}/aggTrades?symbol=ETHBTC&limit=1")[2]
    [kline] = http("GET", f"{base}/klines?symbol=ETHBTC&interval=1m&limit=1")[2]
    avg = http("GET", f"{base}/avgPrice?symbol=ETHBTC")[2]
    depth = http("GET", f"{base}/depth?symbol=ETHBTC&limit=5")[2]
    [ticker] = http("GET", f'{base}/ticker/24hr?symbols=["ETHBTC"]')[2]
    timeline = Timeline()
    timeline.add(recording.recorded()["entries"])
    last = trades[-1]
    answered = [
        ("ethbtc@trade", last["id"], (last["price"], last["qty"], last["time"])),
        ("ethbtc@aggTrade", aggs[-1]["a"], (aggs[-1]["p"], aggs[-1]["q"], aggs[-1]["T"])),
        ("ethbtc@kline_1m", None, (kline[0], *kline[1:6], kline[8])),
        ("ethbtc@avgPrice", None, (avg["price"], avg["closeTime"])),
        ("ethbtc@depth5@100ms", depth["lastUpdateId"], (tuple(depth["bids"][0]), tuple(depth["asks"][0]))),
        ("ethbtc@miniTicker", None, tuple(ticker[n] for n in
            ("lastPrice", "openPrice", "highPrice", "lowPrice", "volume", "quoteVolume"))),
    ]  # fmt: skip
    for stream, order, content in answered:
        verdict = timeline.judge(stream, order, content, 2**60, 2**60)
        assert verdict.sent and verdict.superseded_ms is None, stream


def test_nothing_is_recorded_unless_asked(sim: Simulator) -> None:
    status, _, body = http("GET", f"{sim.rest_url}/_sim/record")
    assert status == 409
    assert "--record" in body["error"]
