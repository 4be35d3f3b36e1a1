"""Requests gunicorn refuses before the application sees them are answered in JSON like every
other error: ``{"status_code": N, "error": "..."}``, never gunicorn's HTML page."""

from __future__ import annotations

import socket

import orjson
import pytest

from tests.processes import Gunicorn

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def exchange(server: Gunicorn, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; read the answer until gunicorn closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"GET /snapshot/" + b"A" * 8200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI Too Long"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
            431,
            "Request Header Fields Too Large",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
            431,
            "Request Header Fields Too Large",
        ),
        (b"GARBAGE\r\n\r\n", 400, "Bad Request: Invalid Request Line"),
        (b"G\xe9T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request: Invalid Method"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "Bad Request: Invalid HTTP header name"),
    ],
)
def test_gunicorn_s_own_refusals_are_json(
    gunicorn: Gunicorn, request_bytes: bytes, status: int, error: str
) -> None:
    got, headers, body = exchange(gunicorn, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    doc = orjson.loads(body)
    assert doc["status_code"] == status
    assert doc["error"].startswith(error)


def test_a_path_just_under_the_limit_still_reaches_the_application(gunicorn: Gunicorn) -> None:
    path = b"/snapshot/" + b"A" * 8000
    got, headers, body = exchange(
        gunicorn, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (got, headers["content-type"]) == (400, "application/json")
    assert orjson.loads(body)["error"].startswith("Invalid symbol")
