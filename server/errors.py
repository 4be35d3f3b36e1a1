"""Every error the API answers, as JSON: ``{"status_code": 500, "error": "..."}``, or, under the
Binance-compatible ``/api/v3/``, Binance's ``{"code": ..., "msg": "..."}``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import HTTPException

# Binance's paths: /api/v3/... and /sapi/v1/system/status (str.startswith takes the tuple).
BINANCE_PREFIX = ("/api/v3/", "/sapi/")
# Binance's "an unknown error occurred" and "internal error" codes, for HTTP errors in its shape.
BINANCE_CODES = {404: -1000, 405: -1000, 413: -1000, 500: -1001}

# What a client is told when Redis does not answer: never redis-py's text (addresses, ports).
STORE_DOWN = "Data store unavailable; try again shortly."
# Redis being down fails every request: its cause is logged at most this often per place and process.
STORE_DOWN_LOG_EVERY_S = 10.0

logger = logging.getLogger(__name__)
_store_down_logged: dict[str, float] = {}
_store_down_lock = threading.Lock()


class ApiError(Exception):
    """An error answer: its HTTP status, a message for the user, and optional headers."""

    def __init__(self, status_code: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.error = error
        self.headers = headers or {}


def body(status_code: int, error: str) -> dict[str, Any]:
    """The JSON body of an error answer, in the shape of the API the request went to."""
    if request.path.startswith(BINANCE_PREFIX):
        return {"code": BINANCE_CODES.get(status_code, -1000), "msg": error}
    return {"status_code": status_code, "error": error}


def register(app: Flask) -> None:
    """Answer our errors, HTTP errors and crashes as JSON (never an HTML page)."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[dict[str, Any], int, dict[str, str]]:
        return body(exc.status_code, exc.error), exc.status_code, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[dict[str, Any], int, list[tuple[str, str]]]:
        code = exc.code or 500
        # Keep the exception's own headers (a 405's Allow), but not its HTML content type.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return body(code, exc.description or exc.name), code, headers

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> tuple[dict[str, Any], int]:
        logger.exception("server: unhandled error")
        return body(500, "internal error"), 500


def store_down(where: str, exc: BaseException) -> None:
    """Log why Redis did not answer, for operators; the client gets STORE_DOWN and no details."""
    now = time.monotonic()
    with _store_down_lock:
        if now - _store_down_logged.get(where, -1e9) < STORE_DOWN_LOG_EVERY_S:
            return
        _store_down_logged[where] = now
    logger.warning("server: %s: Redis does not answer (%s)", where, exc)
