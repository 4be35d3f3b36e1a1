"""The pieces of HTTP/1.1 and WebSocket (RFC 6455) the cheap feed (bench/feed.py) speaks: a request
head, the upgrade's accept key, server frames' headers and clients' masked frames."""

from __future__ import annotations

import base64
import hashlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_header(opcode: int, length: int) -> bytes:
    """An unmasked (server) frame's header, FIN set."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


def accept_key(key: str) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())  # noqa: S324 (RFC 6455 says SHA-1)


def take_head(buffer: bytearray) -> tuple[str, str, dict[str, str]] | None:
    """(method, target, headers in lower case) of a whole request head at the start of ``buffer``,
    taken out of it; None while it is not all there."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    method, target, *_ = (*lines[0].split(" "), "", "")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return method, target, headers


def take_frame(buffer: bytearray) -> tuple[int, bool, bytes] | None:
    """(opcode, FIN, unmasked payload) of a whole frame at the start of ``buffer``, taken out of it;
    None while it is not all there."""
    if len(buffer) < 2:
        return None
    fin, opcode, masked, length = buffer[0] & 0x80, buffer[0] & 0x0F, buffer[1] & 0x80, buffer[1] & 0x7F
    at = 2
    if length >= 126:
        width = 2 if length == 126 else 8
        if len(buffer) < at + width:
            return None
        length, at = int.from_bytes(buffer[at : at + width], "big"), at + width
    mask = bytes(buffer[at : at + 4]) if masked else b""
    at += len(mask)
    if len(buffer) < at + length:
        return None
    payload = unmask(bytes(buffer[at : at + length]), mask)
    del buffer[: at + length]
    return opcode, bool(fin), payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """A client frame's payload, unmasked (RFC 6455 5.3)."""
    if not mask or not payload:
        return payload
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload), "big")


def http_answer(status: int, body: bytes) -> bytes:
    """A whole JSON answer that closes the connection."""
    head = f"HTTP/1.1 {status} -\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body
