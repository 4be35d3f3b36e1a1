"""``GET /api/v3/exchangeInfo``'s answers, prepared once per version of the document.

Binance's document is about 1.9 MB (2,000 symbols and their filters). The messenger writes a
new version every CATALOG_REFRESH_S at most, so each worker prepares a version once: it is
serialized without ``serverTime`` (which is added at the end of each answer), its gzip stream
is compressed once up to that point, and its symbols are kept serialized by name. An answer
then costs one Redis GET and a byte comparison with the prepared version, plus, for a client
that accepts gzip, a copy of the compressor's state and its last few bytes.

Every answer has a weak ETag (the document's version; its symbols for ``symbol=``/``symbols=``),
so a client sending ``If-None-Match`` gets a bodiless 304 while the document is unchanged. The
ETag is weak because ``serverTime`` differs from answer to answer.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Sequence

import orjson
from flask import Request, Response

logger = logging.getLogger(__name__)

GZIP_LEVEL = 6
GZIP_WBITS = 31  # zlib's gzip container
MIN_GZIP_BYTES = 1024  # smaller answers go as they are
HEADERS = {"Vary": "Accept-Encoding", "Cache-Control": "no-cache"}


class Version:
    """One version of the document, ready to answer from."""

    def __init__(self, raw: bytes) -> None:
        doc = orjson.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("symbols", []), list):
            raise ValueError("not an exchangeInfo document")
        self.raw = raw
        self.tag = hashlib.blake2b(raw, digest_size=12).hexdigest()
        entries = [
            s for s in doc.pop("symbols", []) if isinstance(s, dict) and isinstance(s.get("symbol"), str)
        ]
        self.symbols = {s["symbol"]: orjson.Fragment(orjson.dumps(s)) for s in entries}
        doc.pop("serverTime", None)
        self._rest = doc  # timezone, rateLimits, exchangeFilters, ...: small
        everything = orjson.dumps({**doc, "symbols": list(self.symbols.values())})
        self._head = everything[:-1] + b","  # the closing brace comes after serverTime
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
        self._gzip_head = self._compressor.compress(self._head)

    def answer(self, request: Request, symbols: Sequence[str] | None, server_time_ms: int) -> Response:
        """The whole document or these symbols' part: 304 if the client has it, gzip if it takes it."""
        tag = self.tag if symbols is None else f"{self.tag}-{_digest(','.join(symbols))}"
        response = Response(mimetype="application/json", headers=HEADERS)
        response.set_etag(tag, weak=True)
        if request.if_none_match.contains_weak(tag):
            response.status_code = 304
            return response
        compress = request.accept_encodings["gzip"] > 0
        if symbols is None:
            body = self._whole(server_time_ms, compress)
        else:
            part = {**self._rest, "symbols": [self.symbols[s] for s in symbols], "serverTime": server_time_ms}
            body = orjson.dumps(part)
            compress = compress and len(body) >= MIN_GZIP_BYTES
            if compress:
                body = gzip.compress(body, GZIP_LEVEL, mtime=0)
        if compress:
            response.headers["Content-Encoding"] = "gzip"
        response.set_data(body)
        return response

    def _whole(self, server_time_ms: int, compress: bool) -> bytes:
        tail = b'"serverTime":%d}' % server_time_ms
        if not compress:
            return self._head + tail
        compressor = self._compressor.copy()  # the shared one stays at the end of the head
        return self._gzip_head + compressor.compress(tail) + compressor.flush()


class Versions:
    """The last version prepared in this process."""

    def __init__(self) -> None:
        self._last: Version | None = None

    def current(self, raw: bytes | None) -> Version | None:
        """The version of the document Redis holds (prepared if new), or None if there is no valid one."""
        if raw is None:
            return None
        last = self._last
        if last is not None and last.raw == raw:
            return last
        try:
            last = Version(raw)
        except (orjson.JSONDecodeError, ValueError) as exc:
            logger.error("exchangeInfo: the stored document is unusable (%s)", exc)
            return None
        self._last = last
        return last


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
