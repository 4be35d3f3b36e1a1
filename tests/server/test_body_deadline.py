"""The body deadline in-process: a body that is all there is handed on, one that trickles gets a 408."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import orjson

from server.body_deadline import BodyDeadline

MAX_BYTES = 16 * 1024


class Trickle:
    """A request body of which a byte came, and the rest never does (a gunicorn body's ``failed``)."""

    failed = False

    def read(self, size: int) -> bytes:
        gevent.sleep(60)  # waits as a socket read does under gevent: the deadline interrupts it
        return b""


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """An app that answers the body it reads, as the wrapped Flask app would read it."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def call(app: BodyDeadline, path: str, stream: Any, **environ: str) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(headers))

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "POST", "wsgi.input": stream, **environ},
                        start_response))  # fmt: skip
    return answer["status"], answer["headers"], body


def test_a_body_that_is_all_there_is_handed_on_whole() -> None:
    app = BodyDeadline(echo, MAX_BYTES, timeout_s=0.2)
    status, _, body = call(app, "/snapshot/BTC_USDT", io.BytesIO(b'{"max_age_ms": 500}'), CONTENT_LENGTH="19")
    assert (status, body) == ("200 OK", b'{"max_age_ms": 500}')


def test_a_body_not_there_by_the_deadline_is_a_json_408_and_the_connection_is_dropped() -> None:
    app = BodyDeadline(echo, MAX_BYTES, timeout_s=0.2)
    stream = Trickle()
    started = time.monotonic()
    status, headers, body = call(app, "/snapshot/BTC_USDT", stream, CONTENT_LENGTH="100")
    assert 0.2 <= time.monotonic() - started < 1.0
    assert (status, headers["Content-Type"]) == ("408 Request Timeout", "application/json")
    assert orjson.loads(body) == {"status_code": 408, "error": "Request body not received within 0.2 s."}
    assert stream.failed  # gunicorn closes the connection rather than wait for the rest


def test_under_the_binance_api_the_408_is_in_binances_shape() -> None:
    app = BodyDeadline(echo, MAX_BYTES, timeout_s=0.1)
    _, _, body = call(app, "/api/v3/ticker/bookTicker", Trickle(), HTTP_TRANSFER_ENCODING="chunked")
    assert orjson.loads(body) == {"code": -1000, "msg": "Request body not received within 0.1 s."}


def test_a_body_over_the_limit_is_left_for_the_app_to_refuse_unread() -> None:
    seen: dict[str, Any] = {}

    def refuse(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen["input"] = environ["wsgi.input"]
        start_response("413 Request Entity Too Large", [])
        return [b""]

    stream = Trickle()
    app = BodyDeadline(refuse, MAX_BYTES, 5.0)
    status, _, _ = call(app, "/snapshot/BTC_USDT", stream, CONTENT_LENGTH="20000")
    assert status.startswith("413") and seen["input"] is stream
