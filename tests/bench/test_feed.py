"""The cheap feed speaks Binance's stream protocol to an ordinary client, and knows exactly what it
sent last, so the ingest benchmark can judge any reader by it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websocket

from bench.sources import FeedProcess
from bench.tapes import U_START, Tape, batch, entry
from bench.wire import unmask


@pytest.fixture
def feed(logs_dir: Path) -> Iterator[FeedProcess]:
    process = FeedProcess(logs_dir, "--ping-interval-s", "0.2")
    process.start()
    yield process
    process.stop()


def frames(ws: websocket.WebSocket, seconds: float) -> Iterator[tuple[int, Any]]:
    """(opcode, parsed text or raw payload) for ``seconds``; websocket-client answers pings itself."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        opcode, frame = ws.recv_data_frame(True)
        yield opcode, orjson.loads(frame.data) if opcode == websocket.ABNF.OPCODE_TEXT else frame.data


def test_a_combined_stream_as_binance_sends_it_subscribe_replies_pings_and_the_last_value(
    feed: FeedProcess,
) -> None:
    ws = websocket.create_connection(f"{feed.ws_url}/stream?streams=btcusdt@bookTicker", timeout=5)
    try:
        ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["ethbtc@bookTicker"], "id": 7}).decode())
        replies, pings = [], 0
        last_u: dict[str, int] = {}
        received: dict[str, Any] = {}
        for opcode, msg in frames(ws, 0.6):
            if opcode == websocket.ABNF.OPCODE_PING:
                pings += 1
            elif "stream" not in msg:
                replies.append(msg)
            else:
                data = msg["data"]
                assert msg["stream"] == f"{data['s'].lower()}@bookTicker"
                assert list(data) == ["u", "s", "b", "B", "a", "A"]
                assert all(isinstance(data[k], str) for k in "bBaA")
                assert data["u"] == last_u.get(data["s"], U_START) + 1  # each symbol's u goes up by one
                last_u[data["s"]], received[data["s"]] = data["u"], data
        assert replies == [{"result": None, "id": 7}]
        assert set(last_u) == {"BTCUSDT", "ETHBTC"}
        assert feed.state()["streams"] == 2
        feed.flood(False)
        ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}).decode())
        last_data = time.monotonic()
        for opcode, msg in frames(ws, 5):  # until the backlog is read (pings go on)
            if opcode == websocket.ABNF.OPCODE_PING:
                pings += 1  # queued behind the frames already buffered
            elif "data" in msg:
                received[msg["data"]["s"]], last_data = msg["data"], time.monotonic()
            else:
                assert msg == {"result": ["btcusdt@bookTicker", "ethbtc@bookTicker"], "id": 8}
            if time.monotonic() - last_data > 0.5 and pings >= 2:
                break
        assert feed.last() == received
        assert pings >= 2
        assert feed.state()["frames_sent"] >= sum(d["u"] - U_START for d in received.values())
    finally:
        ws.close()


def test_raw_streams_carry_bare_payloads(feed: FeedProcess) -> None:
    ws = websocket.create_connection(f"{feed.ws_url}/ws/bnbbtc@bookTicker", timeout=5)
    try:
        opcode, msg = next(frames(ws, 5))
        assert opcode == websocket.ABNF.OPCODE_TEXT
        assert msg["s"] == "BNBBTC"
        assert "stream" not in msg
    finally:
        ws.close()


def test_a_batch_rotates_over_every_symbol_and_unmasking_round_trips() -> None:
    tapes = [Tape(f"S{i}USDT") for i in range(5)]
    buffer, next_start = batch([entry(t, True) for t in tapes], 3, 12)
    assert next_start == 5  # 3, 4, then 0..4 twice
    assert [t.u - U_START for t in tapes] == [2, 2, 2, 3, 3]
    assert buffer.count(b'"stream":"s0usdt@bookTicker"') == 2
    payload, mask = b"hello, feed", b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert unmask(masked, mask) == payload
