"""The OpenAPI document holds for hostile input: schemathesis against a live server.

Every operation is fed generated requests (odd symbols, wrong types, huge values); every
answer must be one the document lists, in the shape it gives. The only 5xx allowed are the
documented ones: the stale answer (500) and "unavailable, try again" (503), never a crash.
Live-push streams are left out: a valid one never ends, so it cannot be one response.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from server import create_app
from server.openapi import document
from tests.processes import Gunicorn, Messenger, RedisServer, Simulator, http, messenger_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

DOCUMENTED_5XX = ("No current data for", "was last confirmed current", "Market data unavailable",
                  "being subscribed", "Data store unavailable", "symbol list is not loaded")  # fmt: skip


@pytest.fixture(scope="module")
def live_server(logs_dir: Path, redis_server: RedisServer) -> Iterator[Gunicorn]:
    """A simulator, a messenger and a server whose first requests wait only briefly."""
    if not redis_server.running():
        redis_server.start()
    sim = Simulator(logs_dir, "--rate", "5")
    server = Gunicorn(logs_dir, redis_server.url, DEMAND_WAIT_MS=100)
    sim.start()
    messenger = Messenger(logs_dir, messenger_env(sim, redis_server.url), "btcusdt", "ethbtc")
    messenger.start()
    server.start()
    try:
        wait_until(lambda: server.snapshot("BTCUSDT")[0] == 200, 10)
        yield server
    finally:
        for process in (server, messenger, sim):
            process.stop()


# The very document /openapi.json serves (a test below checks they are the same).
schema = schemathesis.openapi.from_dict(document())


def documented_server_errors_only(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 5xx must be the stale or the unavailable answer, never a crash."""
    if response.status_code < 500:
        return None
    body = response.json()
    text = body.get("error") or body.get("msg") or ""
    assert response.status_code in (500, 503), f"undocumented {response.status_code}: {text}"
    assert any(phrase in text for phrase in DOCUMENTED_5XX), (
        f"a {response.status_code} that is not stale: {text}"
    )
    return True


@schema.exclude(path_regex="^/stream/").parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_one_the_document_lists(case: Any, live_server: Gunicorn) -> None:
    case.call_and_validate(
        base_url=live_server.url,
        # 5xx are judged by documented_server_errors_only. "Schema-valid requests are accepted"
        # asks more than a schema can say here (symbol or symbols, not both; one underscore).
        excluded_checks=[not_a_server_error, positive_data_acceptance],
        additional_checks=[documented_server_errors_only],
        timeout=10,
    )


def test_the_served_document_is_the_one_tested(live_server: Gunicorn) -> None:
    assert http("GET", f"{live_server.url}/openapi.json")[2] == document()


def test_the_document_covers_every_route_of_the_app() -> None:
    app = create_app({"redis_url": "redis://127.0.0.1:1/0"})
    routes = {
        rule.rule.replace("<", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    }
    assert routes == set(document()["paths"])
