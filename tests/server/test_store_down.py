"""Redis down, as a client sees it: every route answers its documented 503, in JSON, and no answer
carries redis-py's text (``Error 111 connecting to 127.0.0.1:6379``: internal addresses). The
cause goes to the server's log instead."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from server import create_app, errors
from tests.processes import free_port

PORT = free_port()  # nothing listens there


@pytest.fixture
def app() -> Flask:
    return create_app({"redis_url": f"redis://127.0.0.1:{PORT}/0", "demand_wait_ms": 0})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/status.json"),
        ("GET", "/readyz"),
        ("POST", "/snapshot/BTC_USDT"),
        ("POST", "/snapshot/BTC_USDT/trade?max_age_ms=5"),
        ("POST", "/snapshots?symbols=BTC_USDT,ETH_BTC"),
        ("GET", "/stream/BTC_USDT"),
        ("GET", "/api/v3/exchangeInfo"),
        ("GET", "/api/v3/ticker/bookTicker"),
        ("GET", "/api/v3/ticker/bookTicker?symbol=BTCUSDT"),
        ("GET", "/api/v3/ticker/24hr"),
        ("GET", "/api/v3/depth?symbol=BTCUSDT"),
        ("GET", "/api/v3/trades?symbol=BTCUSDT"),
    ],
)
def test_every_route_answers_a_json_503_without_internal_details(app: Flask, method: str, path: str) -> None:
    response = app.test_client().open(path, method=method)
    assert response.status_code == 503
    assert response.content_type == "application/json"
    text = response.get_data(as_text=True)
    for leak in ("127.0.0.1", str(PORT), "Error 111", "Connection refused", "connecting to"):
        assert leak not in text
    body = response.get_json()
    if path == "/readyz":
        assert body == {"status": "unavailable", "reason": "redis does not answer"}
    elif path.startswith("/api/v3/"):
        assert body["code"] == -1001
        assert response.headers["Retry-After"] == "1"
    else:
        assert body["status_code"] == 503
        assert response.headers["Retry-After"] == "1"


def test_the_cause_is_logged_on_the_server(
    app: Flask, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(errors, "STORE_DOWN_LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.WARNING, logger="server.errors"):
        app.test_client().get("/status.json")
    assert f"127.0.0.1:{PORT}" in caplog.text
    assert "/status.json" in caplog.text


def test_an_outage_is_logged_once_a_while_not_once_a_request(
    app: Flask, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(errors, "_store_down_logged", {})
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="server.errors"):
        for _ in range(20):
            client.get("/api/v3/exchangeInfo")
    assert len(caplog.records) == 1
