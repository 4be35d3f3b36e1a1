"""The connect_429 fault: handshakes refused the way Binance refuses an IP, with a Retry-After."""

from __future__ import annotations

import pytest
import websocket

from tests.processes import Simulator, http


@pytest.mark.parametrize("status", [429, 418])
def test_the_next_handshakes_are_refused_with_the_status_and_retry_after(sim: Simulator, status: int) -> None:
    sim.fault("connect_429", count=1, retry_after_s=7, status=status)
    url = f"{sim.ws_url}/stream?streams=btcusdt@bookTicker"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=5)
    assert (refused.value.status_code, (refused.value.resp_headers or {})["retry-after"]) == (status, "7")
    ws = websocket.create_connection(url, timeout=5)  # only the next one was refused
    ws.close()
    assert len(sim.state()["refused_handshakes"]) == 1


def test_only_429_and_418_can_be_asked_for(sim: Simulator) -> None:
    status, _, body = http("POST", f"{sim.rest_url}/_sim/fault", b'{"fault": "connect_429", "status": 503}')
    assert (status, body) == (400, {"error": "status must be 429 or 418"})
