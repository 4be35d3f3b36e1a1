"""The cheap feed speaks Binance's stream protocol to an ordinary client, and knows exactly what it
sent last, so the ingest benchmark can judge any reader by it; paced, it sends the rate asked for,
and a probe's frame reaches every reader of its symbol with the update id it answered."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websocket

from bench.sources import FeedProcess
from bench.tapes import U_START, Tape, batch, entry, frame
from bench.wire import unmask
from tests.processes import http, wait_until

PACE = 2000  # frames/s: what a websocket-client thread reads with room to spare on a busy machine


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
        replies: list[Any] = []
        pings = 0
        last_u: dict[str, int] = {}
        received: dict[str, Any] = {}
        for opcode, msg in frames(ws, 5):  # until the reply and both symbols' frames are read
            if replies and len(last_u) == 2:
                break
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
    last = frame(entry(tapes[4], True), tapes[4].u)  # a probe's frame is made as a batch's are
    assert buffer.endswith(last)
    assert last.count(b'"u":%d,' % tapes[4].u) == 1


class Reader:
    """A websocket-client connection read by a thread: each text payload, when it arrived (wall clock)."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=5)
        self.payloads: list[tuple[float, dict[str, Any]]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                opcode, frame_ = self.ws.recv_data_frame(True)
            except (websocket.WebSocketException, OSError):
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.payloads.append((time.time(), orjson.loads(frame_.data)))

    def data(self) -> list[dict[str, Any]]:
        """The market data received so far (a combined stream's ``data``), in order."""
        return [p.get("data", p) for _, p in list(self.payloads) if "u" in p.get("data", p)]

    def close(self) -> None:
        self.ws.close()
        self.thread.join(5)


@pytest.fixture
def paced(logs_dir: Path) -> Iterator[FeedProcess]:
    process = FeedProcess(logs_dir, "--rate", str(PACE), "--no-flood")
    process.start()
    yield process
    process.stop()


def test_paced_the_feed_sends_its_rate_shared_by_symbols_rotating_over_every_one(paced: FeedProcess) -> None:
    combined = [f"s{i}usdt" for i in range(30)]
    raw = [f"r{i}btc" for i in range(10)]
    readers = [
        Reader(f"{paced.ws_url}/stream?streams=" + "/".join(f"{s}@bookTicker" for s in combined)),
        Reader(f"{paced.ws_url}/ws/" + "/".join(f"{s}@bookTicker" for s in raw)),
    ]
    try:
        wait_until(lambda: paced.state()["streams"] == 40, 5, what="every stream subscribed")
        assert sum(len(r.data()) for r in readers) == 0  # the flood is off: nothing paced
        want = 2 * PACE  # two seconds' worth
        started = time.monotonic()
        paced.flood(True)
        wait_until(lambda: sum(len(r.data()) for r in readers) >= want, 10, 0.005, what=f"{want} frames")
        rate = want / (time.monotonic() - started)
        paced.flood(False)
        assert 0.75 * PACE <= rate <= 1.25 * PACE  # as fast as read would be three times that and more
        sent = paced.state()["frames_sent"]
        wait_until(lambda: sum(len(r.data()) for r in readers) == sent, 5, what="every frame sent is read")
        first, second = (r.data() for r in readers)
        assert 0.65 <= len(first) / sent <= 0.85  # 30 of the 40 symbols
        for data, symbols in ((first, combined), (second, raw)):
            counts = Counter(d["s"] for d in data)
            assert set(counts) == {s.upper() for s in symbols}
            assert max(counts.values()) - min(counts.values()) <= 1  # rotating: each its turn
            for symbol in counts:
                us = [d["u"] for d in data if d["s"] == symbol]
                assert us == list(range(U_START + 1, U_START + 1 + len(us)))
        assert all(list(d) == ["u", "s", "b", "B", "a", "A"] for d in first + second)
        assert all("stream" in p for _, p in readers[0].payloads)
        assert not any("stream" in p for _, p in readers[1].payloads)
    finally:
        for reader in readers:
            reader.close()


def test_a_probe_reaches_every_reader_of_its_symbol_at_once_with_the_u_it_answered(
    paced: FeedProcess,
) -> None:
    readers = [
        Reader(f"{paced.ws_url}/stream?streams=ethbtc@bookTicker/btcusdt@bookTicker/bnbbtc@bookTicker"),
        Reader(f"{paced.ws_url}/ws/btcusdt@bookTicker"),
        Reader(f"{paced.ws_url}/ws/ethbtc@bookTicker"),
    ]
    try:
        wait_until(lambda: paced.state()["streams"] == 5, 5, what="every stream subscribed")
        status, _, doc = http("POST", f"http://127.0.0.1:{paced.port}/_feed/probe?symbol=XRPBTC")
        assert status == 404, doc
        for flood in (False, True):  # alone, then among the paced frames
            paced.flood(flood)
            answer = paced.probe("btcusdt")
            assert answer["symbol"] == "BTCUSDT"
            assert answer["connections"] == 2

            def probed(reader: Reader, u: int = answer["u"]) -> list[tuple[float, dict[str, Any]]]:
                return [(t, p) for t, p in list(reader.payloads) if p.get("data", p)["u"] == u
                        and p.get("data", p)["s"] == "BTCUSDT"]  # fmt: skip

            wait_until(lambda: all(probed(r) for r in readers[:2]), 5, what="the probe's frame")
            (at0, combined), (at1, bare) = probed(readers[0])[0], probed(readers[1])[0]
            assert combined == {"stream": "btcusdt@bookTicker", "data": bare}
            assert bare["s"] == "BTCUSDT"
            assert list(bare) == ["u", "s", "b", "B", "a", "A"]
            assert 0 <= at0 - answer["sent_at"] < 1.0
            assert 0 <= at1 - answer["sent_at"] < 1.0
            assert not any(p["s"] == "BTCUSDT" for _, p in readers[2].payloads)  # ETHBTC's reader
            if not flood:
                assert paced.last()["BTCUSDT"] == bare
    finally:
        for reader in readers:
            reader.close()
