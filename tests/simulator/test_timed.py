"""Timed streams: a kline stream's windows are counted from its subscription, as Binance's are."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from simulator import clock, timed
from simulator.market import Market
from simulator.timed import TimedStreams


@pytest.mark.parametrize("before_ms", [1, 50, 99])
def test_a_subscription_just_before_a_close_gets_that_close(monkeypatch: Any, before_ms: int) -> None:
    """Subscribed ``before_ms`` before a 1 s window closes, the first tick after the close (up to
    100 ms later) sends that window's candle with ``"x": true``; it used to be lost when no tick
    came between the subscription and the close (the window was noted at the first tick)."""
    close = (clock.now_ms() // 1000 + 2) * 1000  # a window boundary ahead of the market's clock
    now = close - before_ms
    monkeypatch.setattr(timed, "now_ms", lambda: now)
    streams = TimedStreams(Market(seed=5))
    streams.add("ethbtc@kline_1s")
    now = close + 100 - before_ms  # the next tick, after the close
    frames = [orjson.loads(p) for s, p in streams.due(1) if s == "ethbtc@kline_1s"]
    closed = [f["k"] for f in frames if f["k"]["x"]]
    assert [(k["t"], k["T"]) for k in closed] == [(close - 1000, close - 1)]


def test_a_close_is_sent_once_and_a_stream_subscribed_again_starts_afresh(monkeypatch: Any) -> None:
    close = (clock.now_ms() // 1000 + 2) * 1000
    now = close - 10
    monkeypatch.setattr(timed, "now_ms", lambda: now)
    streams = TimedStreams(Market(seed=5))
    streams.add("ethbtc@kline_1s")
    now = close + 40

    def closes(tick: int) -> list[int]:
        return [orjson.loads(p)["k"]["t"] for _, p in streams.due(tick) if orjson.loads(p)["k"]["x"]]

    assert closes(1) == [close - 1000]
    now = close + 140
    assert closes(2) == []
    streams.remove("ethbtc@kline_1s")
    now = close + 1010
    streams.add("ethbtc@kline_1s")  # in the window opened at close + 1000: nothing closed for it yet
    now = close + 1110
    assert closes(3) == []
    now = close + 2010
    assert closes(4) == [close + 1000]
