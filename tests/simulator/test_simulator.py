"""The simulator behaves like Binance (shared/binance-protocol.md), faults included."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import websocket

from tests.processes import Simulator, http, wait_until

SimFactory = Callable[..., Simulator]


@pytest.fixture
def connect() -> Iterator[Callable[..., websocket.WebSocket]]:
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


def next_json(ws: websocket.WebSocket, where: Callable[[Any], bool] = lambda m: True) -> Any:
    """The next text frame that matches (control frames answered by the library)."""
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            msg = orjson.loads(frame.data)
            if where(msg):
                return msg
        elif opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ConnectionError(frame.data)


def close_of(ws: websocket.WebSocket, timeout_s: float = 5) -> tuple[int, str]:
    """Read until the server's close frame (answered, as clients do); its (code, reason)."""
    ws.settimeout(timeout_s)
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()


def drain_until_silent(ws: websocket.WebSocket) -> None:
    """Read frames until the socket's timeout fires."""
    while True:
        ws.recv_frame()


def reply(ws: websocket.WebSocket, request: dict[str, Any]) -> Any:
    ws.send(orjson.dumps(request).decode())
    return next_json(ws, lambda m: "id" in m)


def test_combined_and_raw_streams_have_binance_shapes(sim: Simulator, connect: Any) -> None:
    combined = next_json(connect(sim, "/stream?streams=btcusdt@bookTicker"))
    assert combined["stream"] == "btcusdt@bookTicker"
    assert set(combined["data"]) == {"u", "s", "b", "B", "a", "A"}
    assert all(isinstance(combined["data"][k], str) for k in "bBaA")
    raw = next_json(connect(sim, "/ws/ethbtc@bookTicker"))
    assert set(raw) == {"u", "s", "b", "B", "a", "A"} and raw["s"] == "ETHBTC"


def test_live_subscription_methods_and_their_replies(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/ws")
    assert reply(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker", "bnbbtc@trade"], "id": 1}) == {
        "result": None, "id": 1}  # fmt: skip
    assert reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": "a3"}) == {
        "result": ["btcusdt@bookTicker", "bnbbtc@trade"], "id": "a3"}  # fmt: skip
    time.sleep(1.1)  # stay under 5 messages a second
    assert reply(ws, {"method": "UNSUBSCRIBE", "params": ["bnbbtc@trade"], "id": 2}) == {
        "result": None,
        "id": 2,
    }
    assert reply(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 3}) == {
        "result": False,
        "id": 3,
    }
    assert reply(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 4}) == {
        "result": None,
        "id": 4,
    }
    assert "stream" in next_json(ws, lambda m: "id" not in m)


@pytest.mark.parametrize(
    ("request_doc", "code", "msg"),
    [
        (
            {"method": "SUBSCRIBE", "params": ["BTCUSDT@bookTicker"], "id": 1},
            2,
            "Invalid request: invalid stream",
        ),
        (
            {"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 1},
            2,
            "Invalid request: invalid stream",
        ),
        ({"method": "FETCH", "id": 1}, 2, "Invalid request: unknown variant `FETCH`"),
        ({"params": [], "id": 1}, 2, "Invalid request: missing field `method`"),
        ({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1.5}, 2, "Invalid request: request ID"),
        ({"method": "SET_PROPERTY", "params": ["speed", True], "id": 1}, 0, "Unknown property"),
        (
            {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 1},
            1,
            "Invalid value type: expected Boolean",
        ),
        (
            {"method": "GET_PROPERTY", "params": [5], "id": 1},
            2,
            "Invalid request: property name must be a string",
        ),
        (
            {"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 1},
            2,
            "Invalid request: too many parameters",
        ),
    ],
)
def test_bad_requests_get_binance_error_codes(
    sim: Simulator, connect: Any, request_doc: dict[str, Any], code: int, msg: str
) -> None:
    answer = reply(connect(sim, "/ws"), request_doc)
    assert answer["error"]["code"] == code
    assert answer["error"]["msg"].startswith(msg)


def test_invalid_json_is_code_3(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/ws")
    ws.send("{nope")
    assert next_json(ws)["error"]["code"] == 3


def test_a_sixth_message_within_a_second_closes_with_1008(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/ws/btcusdt@bookTicker")
    for _ in range(6):
        ws.ping("x")
    assert close_of(ws) == (1008, "Too many requests")
    closed = wait_until(lambda: sim.state()["closed"], 2)
    assert closed[-1]["violations"] == ["too many requests"]


def test_four_messages_a_second_are_fine(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/ws/btcusdt@bookTicker")
    for n in range(12):
        ws.ping(str(n))
        time.sleep(0.26)
    next_json(ws)
    assert sim.sessions()[0]["violations"] == []


def test_more_than_1024_streams_are_refused(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/ws")
    streams = [f"sim{n:04d}usdt@trade" for n in range(1025)]
    assert reply(ws, {"method": "SUBSCRIBE", "params": streams, "id": 9})["error"] == {
        "code": 4, "msg": "Too many subscriptions"}  # fmt: skip


def test_connect_urls_over_8000_characters_are_refused(sim: Simulator, connect: Any) -> None:
    streams = "/".join(f"sym{n:05d}usdt@bookTicker" for n in range(400))
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(sim, f"/stream?streams={streams}")
    assert refused.value.status_code == 414


def test_server_pings_and_closes_a_client_that_does_not_pong(sim_factory: SimFactory, connect: Any) -> None:
    sim = sim_factory("--ping-interval", "0.3", "--pong-timeout", "1")
    ws = connect(sim, "/ws/btcusdt@bookTicker")
    started = time.monotonic()
    pings = 0
    ws.settimeout(5)
    while True:  # recv_frame: the raw frames, so no pong is sent for us
        frame = ws.recv_frame()
        pings += frame.opcode == websocket.ABNF.OPCODE_PING
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            break
    assert pings >= 2
    assert 1.0 <= time.monotonic() - started <= 3.0
    closed = wait_until(lambda: sim.state()["closed"], 2)
    assert closed[-1]["violations"] == ["no pong"]


def test_a_client_that_pongs_is_kept(sim_factory: SimFactory, connect: Any) -> None:
    sim = sim_factory("--ping-interval", "0.3", "--pong-timeout", "1")
    ws = connect(sim, "/ws/btcusdt@bookTicker")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        next_json(ws)  # recv_data_frame answers pings
    session = sim.sessions()[0]
    assert session["pongs_received"] >= 4 and session["violations"] == []


def test_connections_are_cut_at_their_maximum_age(sim_factory: SimFactory, connect: Any) -> None:
    sim = sim_factory("--max-connection-age", "1")
    ws = connect(sim, "/ws/btcusdt@bookTicker")
    assert close_of(ws) == (1000, "connection lifetime reached")


def test_connection_attempts_over_the_budget_are_refused(sim_factory: SimFactory, connect: Any) -> None:
    sim = sim_factory("--max-connections", "2")
    connect(sim, "/ws")
    connect(sim, "/ws")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(sim, "/ws")
    assert refused.value.status_code == 429
    assert sim.state()["rejected_connections"] == 1


def test_faults_drop_stall_shutdown_and_an_older_update(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/stream?streams=btcusdt@bookTicker")
    latest = next_json(ws)["data"]["u"]
    sim.market(rate=0)
    old = sim.fault("stale_update", symbol="BTCUSDT", back=5)
    assert next_json(ws)["data"]["u"] == old["sent"]["u"] < latest + 5
    sim.fault("shutdown", grace_s=0.2)
    assert next_json(ws) == {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": pytest.approx(
        time.time() * 1000, abs=5000)}}  # fmt: skip
    assert close_of(ws)[0] == 1000

    dropped = connect(sim, "/ws/btcusdt@bookTicker")
    sim.fault("drop")
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        close_of(dropped)  # the socket ends without a close frame

    stalled = connect(sim, "/ws/btcusdt@bookTicker")
    sim.market(rate=50)
    next_json(stalled)
    sim.fault("stall")
    stalled.ping("are you there")
    stalled.settimeout(1.0)
    with pytest.raises(websocket.WebSocketTimeoutException):  # neither data nor a pong arrives
        drain_until_silent(stalled)
    assert stalled.connected


def test_rest_book_ticker_single_list_all_and_errors(sim: Simulator) -> None:
    status, headers, one = http("GET", f"{sim.rest_url}/api/v3/ticker/bookTicker?symbol=BTCUSDT")
    assert status == 200 and set(one) == {"symbol", "bidPrice", "bidQty", "askPrice", "askQty"}
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 2
    status, _, many = http("GET", f'{sim.rest_url}/api/v3/ticker/bookTicker?symbols=["BTCUSDT","ETHBTC"]')
    assert status == 200 and [e["symbol"] for e in many] == ["BTCUSDT", "ETHBTC"]
    status, _, every = http("GET", f"{sim.rest_url}/api/v3/ticker/bookTicker")
    assert status == 200 and len(every) == 1262  # the TRADING symbols of the recorded exchangeInfo
    status, _, err = http("GET", f"{sim.rest_url}/api/v3/ticker/bookTicker?symbol=NOPEUSDT")
    assert (status, err) == (400, {"code": -1121, "msg": "Invalid symbol."})


def test_rest_values_are_what_the_stream_last_sent(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/ws/btcusdt@bookTicker")
    sim.market(rate=0)
    sent = sim.set_book("BTCUSDT", "100.10000000", "1.00000000", "100.20000000", "2.00000000")
    frame = next_json(ws, lambda m: m["u"] == sent["u"])
    _, _, rest = http("GET", f"{sim.rest_url}/api/v3/ticker/bookTicker?symbol=BTCUSDT")
    assert (
        (frame["b"], frame["a"]) == (rest["bidPrice"], rest["askPrice"]) == ("100.10000000", "100.20000000")
    )


def test_rest_429_fault_carries_retry_after(sim: Simulator) -> None:
    sim.fault("rest_429", count=1, retry_after_s=7)
    status, headers, body = http("GET", f"{sim.rest_url}/api/v3/ping")
    assert (status, headers["Retry-After"], body["code"]) == (429, "7", -1003)
    assert http("GET", f"{sim.rest_url}/api/v3/ping")[0] == 200


def test_exchange_info_is_the_recorded_one_and_listings_can_be_added(sim: Simulator) -> None:
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
    assert len(info["symbols"]) == 1695
    sim.control("POST", "listing", {"base": "NEW", "quote": "USDT"})
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
    assert {"symbol": "NEWUSDT", "status": "TRADING"}.items() <= info["symbols"][-1].items()


def test_flood_mode_sends_thousands_of_frames_a_second(sim_factory: SimFactory, connect: Any) -> None:
    sim = sim_factory("--flood")
    ws = connect(sim, "/stream?streams=btcusdt@bookTicker/ethbtc@bookTicker")
    count, started = 0, time.monotonic()
    while time.monotonic() - started < 1.0:
        next_json(ws)
        count += 1
    assert count > 5000
    wait_until(lambda: sim.sessions()[0]["frames_sent"] >= count, 2)


def test_a_flood_moves_every_subscribed_symbol_not_only_the_first_batch(
    sim_factory: SimFactory, connect: Any
) -> None:
    """2,000 symbols over two connections under a flood: every one of them gets frames (a flood
    that started each batch of 512 at the first symbol left 1,488 of them silent)."""
    sim = sim_factory("--flood", "--extra-symbols", "800")
    _, _, info = http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
    symbols = sorted(s["symbol"] for s in info["symbols"] if s["status"] == "TRADING")[:2000]
    assert len(symbols) == 2000
    groups = [[f"{s.lower()}@bookTicker" for s in symbols[i : i + 1000]] for i in (0, 1000)]
    unseen = [set(group) for group in groups]
    sockets = []
    for group in groups:
        ws = connect(sim, f"/stream?streams={group[0]}")
        ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": group[1:], "id": 1}).decode())
        sockets.append(ws)

    def read(ws: websocket.WebSocket, left: set[str]) -> None:
        deadline = time.monotonic() + 15
        with contextlib.suppress(websocket.WebSocketTimeoutException):  # silent: its symbols left out
            while left and time.monotonic() < deadline:
                left.discard(next_json(ws).get("stream"))

    # One reader per connection: the flood waits for the slower one, so they must read together.
    threads = [threading.Thread(target=read, args=pair) for pair in zip(sockets, unseen, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [len(left) for left in unseen] == [0, 0]


def test_every_kind_is_streamed_in_the_shape_the_parsers_expect(sim: Simulator, connect: Any) -> None:
    from messenger.binance import KINDS

    kinds = [
        "trade",
        "aggTrade",
        "kline_1m",
        "kline_1M",
        "ticker",
        "miniTicker",
        "avgPrice",
        "depth5",
        "depth20",
    ]
    streams = [KINDS[k].stream("BTCUSDT") for k in kinds]
    ws = connect(sim, "/stream?streams=" + "/".join(streams))
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + 5
    while len(seen) < len(streams) and time.monotonic() < deadline:
        frame = next_json(ws)
        seen.setdefault(frame["stream"], frame["data"])
    assert set(seen) == set(streams)
    for kind in kinds:
        order, fields = KINDS[kind].parse(seen[KINDS[kind].stream("BTCUSDT")], "BTCUSDT")
        assert order is not None
        assert fields["symbol"] == "BTCUSDT"


def test_timed_streams_come_at_binance_speeds(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/stream?streams=ethbtc@depth5@100ms/ethbtc@miniTicker")
    counts: dict[str, int] = {}
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        frame = next_json(ws)
        counts[frame["stream"]] = counts.get(frame["stream"], 0) + 1
    assert 15 <= counts["ethbtc@depth5@100ms"] <= 25  # every 100 ms
    assert 1 <= counts["ethbtc@miniTicker"] <= 3  # every second


def test_rest_recent_trades_are_the_streamed_ones(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/ws/btcusdt@trade")
    streamed = next_json(ws)
    _, _, trades = http("GET", f"{sim.rest_url}/api/v3/trades?symbol=BTCUSDT&limit=1000")
    assert streamed["t"] in [t["id"] for t in trades]
    [match] = [t for t in trades if t["id"] == streamed["t"]]
    assert (match["price"], match["qty"], match["isBuyerMaker"]) == (
        streamed["p"],
        streamed["q"],
        streamed["m"],
    )
    _, _, quiet = http("GET", f"{sim.rest_url}/api/v3/aggTrades?symbol=NEOBTC&limit=1")
    assert len(quiet) == 1  # every symbol has some history, even one nobody moves
    status, _, err = http("GET", f"{sim.rest_url}/api/v3/trades?symbol=BTCUSDT&limit=5000")
    assert (status, err["code"]) == (400, -1130)


def test_a_probe_queued_behind_a_full_connection_is_timed_when_written_not_when_queued(
    sim_factory: SimFactory, connect: Any
) -> None:
    """Binance's "sent" is the write to the connection: a probe's frame queued behind thousands
    that a client has not read yet is marked written only once the client reads its way to it
    (the latency a benchmark counts from that mark is the client's, not the simulator's queue)."""
    sim = sim_factory("--flood")
    ws = connect(sim, "/stream?streams=btcusdt@bookTicker/ethbtc@bookTicker")

    # Not reading: the socket's buffers fill, then the connection's queue, then the flood waits.
    def stuck() -> bool:  # nothing more written for a while
        before = int(sim.sessions()[0]["frames_sent"])
        time.sleep(0.3)
        return before > 0 and int(sim.sessions()[0]["frames_sent"]) == before

    wait_until(stuck, 20, what="the connection backed up")
    doc = {"symbol": "BTCUSDT", "bid_price": "1.01000000", "bid_quantity": "1.00000000",
           "ask_price": "1.02000000", "ask_quantity": "1.00000000"}  # fmt: skip
    status, _, probe = http("POST", f"{sim.rest_url}/_sim/book", orjson.dumps(doc))
    assert status == 200 and probe["receivers"] == 1
    u = probe["u"]
    written = f"{sim.rest_url}/_sim/book/BTCUSDT/written?u={u}"
    status, _, times = http("GET", written)
    assert status == 200 and times["written_at_ms"] is None  # still queued: nothing was read
    assert times["queued_at_ms"] <= probe["published_at_ms"]
    reading_from = time.time() * 1000
    ws.settimeout(20)
    got = next_json(ws, lambda m: m["data"].get("s") == "BTCUSDT" and m["data"]["u"] == u)
    received = time.time() * 1000
    assert got["data"]["b"] == "1.01000000"
    _, _, times = http("GET", written)
    # Written after the client began to read (the frames ahead of it first), before it arrived.
    assert reading_from <= times["written_at_ms"] <= received
    assert times["written_at_ms"] > times["queued_at_ms"]


def test_a_probes_write_time_is_asked_by_its_update_id(sim: Simulator, connect: Any) -> None:
    ws = connect(sim, "/ws/btcusdt@bookTicker")
    doc = {"symbol": "BTCUSDT", "bid_price": "2.01000000", "bid_quantity": "1.00000000",
           "ask_price": "2.02000000", "ask_quantity": "1.00000000"}  # fmt: skip
    _, _, probe = http("POST", f"{sim.rest_url}/_sim/book", orjson.dumps(doc))
    next_json(ws, lambda m: m.get("u") == probe["u"])
    status, _, times = http("GET", f"{sim.rest_url}/_sim/book/btcusdt/written?u={probe['u']}")
    assert status == 200
    assert times["queued_at_ms"] <= times["written_at_ms"] <= time.time() * 1000
    assert http("GET", f"{sim.rest_url}/_sim/book/BTCUSDT/written?u={probe['u'] + 10**9}")[0] == 404
    assert http("GET", f"{sim.rest_url}/_sim/book/BTCUSDT/written?u=x")[0] == 400
    assert http("GET", f"{sim.rest_url}/_sim/book/BTCUSDT/written")[0] == 400
