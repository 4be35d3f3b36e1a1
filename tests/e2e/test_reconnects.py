"""Reconnects as a client of the HTTP API sees them: one connection's trouble stays its own.

A 1008 "Too many requests" close is about the connection that got it: symbols on the other
connections keep answering 200, and when another connection drops later it is back within the
backoff its log line announced. Only what Binance counts per IP (a handshake refused with 429
or 418) holds back every new connection, for its Retry-After, and the log says so.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.processes import Gunicorn, Messenger, Simulator, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MessengerFactory = Callable[..., Messenger]
SYMBOLS = ("BTCUSDT", "ETHBTC", "BNBBTC", "LTCBTC")


def session_of(sim: Simulator, symbol: str) -> dict[str, Any] | None:
    """The open simulator connection carrying a symbol's bookTicker."""
    stream = f"{symbol.lower()}@bookTicker"
    return next((s for s in sim.sessions() if stream in s["streams"]), None)


def announced_delay(messenger: Messenger, what: str) -> float | None:
    """The delay of the last "<what>...; reconnecting in X s" line of the messenger's log."""
    found = re.findall(rf"conn \d+: {what}.*; reconnecting in ([\d.]+) s", messenger.log())
    return float(found[-1]) if found else None


def test_a_1008_on_one_connection_leaves_the_others_serving_and_a_later_drop_reconnects_as_announced(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    # The settings: one symbol a connection, the default backoff (0.5 s to 30 s).
    messenger = messenger_factory(
        sim, *SYMBOLS, MAX_STREAMS_PER_CONNECTION=1, RECONNECT_MIN_MS=500, RECONNECT_MAX_MS=30000
    )
    wait_until(lambda: all(gunicorn.snapshot(s)[0] == 200 for s in SYMBOLS), 10, what="every symbol")
    limited = session_of(sim, "BTCUSDT")
    assert limited is not None
    sim.fault("close", session=limited["id"], code=1008, reason="Too many requests")
    wait_until(lambda: announced_delay(messenger, r"closed by server \(1008"), 5, what="the 1008 noticed")

    # For 6 s the three other symbols answer 200, every time they are asked.
    others = [s for s in SYMBOLS if s != "BTCUSDT"]
    answers: list[tuple[str, int]] = []
    until = time.monotonic() + 6.0
    while time.monotonic() < until:
        answers += [(s, gunicorn.snapshot(s)[0]) for s in others]
        time.sleep(0.05)
    assert len(answers) > 30
    assert [a for a in answers if a[1] != 200] == []

    # Then another connection drops: it is back within the backoff its log line announces.
    dropped = session_of(sim, "ETHBTC")
    assert dropped is not None
    sim.fault("drop", session=dropped["id"])
    dropped_at = time.monotonic()
    delay = wait_until(lambda: announced_delay(messenger, "dropped"), 5, what="the drop's log line")
    assert delay <= 1.0  # a first backoff (0.25 to 0.5 s), not what remains of the 1008's 30 s
    replaced = wait_until(
        lambda: (s := session_of(sim, "ETHBTC")) and s["id"] != dropped["id"] and s, delay + 1.5, 0.01
    )
    assert replaced
    assert time.monotonic() - dropped_at <= delay + 1.5
    wait_until(lambda: gunicorn.snapshot("ETHBTC")[0] == 200, 3, what="ETHBTC served again")
    # The 1008 still holds back its own connection alone.
    assert session_of(sim, "BTCUSDT") is None
    assert gunicorn.snapshot("BTCUSDT")[0] == 500


def test_a_handshake_429_holds_every_reconnect_for_its_retry_after_and_the_log_says_so(
    sim: Simulator, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    messenger = messenger_factory(sim, "btcusdt", RECONNECT_MIN_MS=100, RECONNECT_MAX_MS=1000)
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == 200, 10, what="BTCUSDT")
    first = session_of(sim, "BTCUSDT")
    assert first is not None
    sim.fault("connect_429", count=1, retry_after_s=3)
    sim.fault("drop")
    refused = wait_until(lambda: sim.state()["refused_handshakes"], 5, 0.01, what="a refused reconnect")[0]
    back = wait_until(lambda: (s := session_of(sim, "BTCUSDT")) and s["id"] != first["id"] and s, 8, 0.01)
    opened = time.time() - back["age_s"]
    # Nothing was tried again before Binance's Retry-After (3 s) had passed, and then it was.
    assert 3.0 <= opened - refused <= 4.5
    assert len(sim.state()["refused_handshakes"]) == 1
    log = messenger.log()
    assert "Binance refused the connection (HTTP 429); no new connection for 3.0 s" in log
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == 200, 5, what="BTCUSDT served again")
