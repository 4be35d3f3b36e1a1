"""Binance unreachable: said once, plainly, with the URL and what failed, and said again when it answers."""

from __future__ import annotations

import logging

import pytest
import redis

from messenger.catalog import Catalog
from messenger.reachability import REST, WEBSOCKET, Reachability
from messenger.rest import BinanceRest
from tests.processes import free_port


def test_an_outage_is_logged_once_per_endpoint_with_its_url_and_the_offline_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reach = Reachability()
    with caplog.at_level(logging.INFO, "messenger.reachability"):
        for _ in range(3):
            reach.failed(WEBSOCKET, "wss://stream.binance.com:9443", "connect failed: timed out")
        reach.failed(REST, "https://api.binance.com/api/v3/exchangeInfo", "cannot connect (refused)")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith(
        "binance: unreachable: wss://stream.binance.com:9443: connect failed: timed out."
    )
    assert all("`make demo`" in line and "Retrying" in line for line in lines)
    assert reach.failures() == [
        "wss://stream.binance.com:9443: connect failed: timed out",
        "https://api.binance.com/api/v3/exchangeInfo: cannot connect (refused)",
    ]

    caplog.clear()
    with caplog.at_level(logging.INFO, "messenger.reachability"):
        reach.reached(WEBSOCKET, "wss://stream.binance.com:9443")
        reach.reached(WEBSOCKET, "wss://stream.binance.com:9443")
    assert [r.getMessage() for r in caplog.records] == [
        "binance: wss://stream.binance.com:9443 answers again"
    ]
    assert reach.failures() == ["https://api.binance.com/api/v3/exchangeInfo: cannot connect (refused)"]


def test_a_symbol_list_that_cannot_be_fetched_is_reported_without_a_traceback_and_retried(
    fake_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    reach = Reachability()
    catalog = Catalog(BinanceRest(url, timeout_s=2), fake_redis, refresh_s=300, reach=reach)
    with caplog.at_level(logging.INFO):
        delay = catalog._fetch()
    assert 0 < delay <= 1
    assert reach.failures() == [f"{url}/api/v3/exchangeInfo: cannot connect ([Errno 111] Connection refused)"]
    assert not any(r.exc_info for r in caplog.records)
    assert any(f"exchangeInfo failed: {url}/api/v3/exchangeInfo: cannot connect" in r.getMessage()
               for r in caplog.records)  # fmt: skip
