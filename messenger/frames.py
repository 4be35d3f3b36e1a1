"""A server's WebSocket frames (RFC 6455), read from a blocking socket in large chunks.

websocket-client reads each frame with two or three ``recv`` calls (header, length, payload),
and builds an object for it: at 20,000 frames/s that is the better part of the messenger's CPU,
and every ``recv`` lets the GIL go and takes it back, against the other readers and the writer.
With ``WS_TRANSPORT=websocket-client`` (the default) websocket-client still connects, sends,
pings and closes; the frames it receives are cut here, from one ``recv`` of up to
``CHUNK_BYTES`` at a time: every complete frame in it, before the next ``recv``.

What a client must refuse from a server is refused (websocket-client's exception, so the
connection ends as on any protocol error): a masked frame, reserved bits, an unknown opcode, a
control frame fragmented or over 125 bytes, a continuation of nothing, a new message inside a
fragmented one, a message over ``MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from websocket import WebSocketConnectionClosedException, WebSocketProtocolException

CHUNK_BYTES = 65536
# Binance's frames are small; a depth snapshot of 5,000 levels a side is well under this.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Binance sends every message whole; a message in more pieces than this is refused.
MAX_FRAGMENTS = 4096

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_FIN_TEXT = _FIN | TEXT  # an unfragmented text message: nearly every frame

# A text message's payload and the monotonic time its last bytes were read.
TextSink = Callable[[bytes, float], None]
# A control frame (CLOSE, PING, PONG) and its payload; True ends the reading (after a CLOSE).
ControlSink = Callable[[int, bytes, float], bool]
# Called once per ``recv`` with the time it returned: proof of life.
HeardSink = Callable[[float], None]


def read_frames(
    recv: Callable[[int], bytes],
    on_text: TextSink,
    on_control: ControlSink,
    heard: HeardSink,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> None:
    """Read frames until ``on_control`` says stop; raises websocket-client's
    WebSocketConnectionClosedException when the peer is gone, WebSocketProtocolException for what a
    server must not send, and whatever ``recv`` raises."""
    monotonic = time.monotonic
    rest = b""  # the unread tail of the last chunk: the start of a frame
    parts: list[bytes] = []  # chunks received since, not joined until the frame is whole
    held = 0  # len(rest) + the parts' lengths
    need = 2  # bytes (from rest's start) the next frame needs before it can be cut
    fragments: list[bytes] | None = None  # a fragmented message's payloads so far
    fragmented_text = False
    fragmented_bytes = 0
    while True:
        chunk = recv(CHUNK_BYTES)
        if not chunk:
            raise WebSocketConnectionClosedException("Connection to remote host was lost.")
        now = monotonic()
        heard(now)
        held += len(chunk)
        if held < need:
            parts.append(chunk)
            continue
        if rest or parts:
            parts.append(chunk)
            buf = rest + b"".join(parts)
            parts = []
        else:
            buf = chunk
        n = len(buf)
        pos = 0
        while True:
            if n - pos < 2:
                need = 2
                break
            b0 = buf[pos]
            length = buf[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    need = 4
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    need = 10
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            else:
                raise WebSocketProtocolException("a masked frame from the server")
            if length > max_message_bytes:
                raise WebSocketProtocolException(f"a frame of {length} bytes")
            if b0 != _FIN_TEXT or fragments is not None:  # refused from its header, not its payload
                _check(b0, length, fragments is not None)
            end = start + length
            if end > n:
                need = end - pos
                break
            if b0 == _FIN_TEXT and fragments is None:
                on_text(buf[start:end], now)
                pos = end
                continue
            payload = buf[start:end]
            pos = end
            opcode = b0 & 0x0F
            if opcode >= CLOSE:
                if on_control(opcode, payload, now):
                    return
                continue
            if fragments is None:
                fragments, fragmented_text, fragmented_bytes = [], opcode == TEXT, 0
            fragments.append(payload)
            fragmented_bytes += length
            if fragmented_bytes > max_message_bytes:
                raise WebSocketProtocolException(f"a message of over {fragmented_bytes} bytes")
            if len(fragments) > MAX_FRAGMENTS:  # empty ones would hold memory, counting no bytes
                raise WebSocketProtocolException(f"a message in over {MAX_FRAGMENTS} fragments")
            if b0 & _FIN:
                message, fragments = b"".join(fragments), None
                if fragmented_text:
                    on_text(message, now)
                # A binary message: Binance sends none on these streams; nothing reads it.
        rest = buf[pos:] if pos < n else b""
        held = len(rest)


def _check(b0: int, length: int, inside_message: bool) -> None:
    """Refuse a frame a server must not send, from its first byte and length."""
    opcode = b0 & 0x0F
    if b0 & 0x70:
        raise WebSocketProtocolException("reserved bits set (no extension was agreed)")
    if opcode >= CLOSE:
        if opcode not in (CLOSE, PING, PONG):
            raise WebSocketProtocolException(f"unknown control opcode {opcode:#x}")
        if not b0 & _FIN or length > 125:
            raise WebSocketProtocolException("a fragmented or long control frame")
    elif opcode == CONTINUATION:
        if not inside_message:
            raise WebSocketProtocolException("a continuation frame outside a message")
    elif opcode not in (TEXT, BINARY):
        raise WebSocketProtocolException(f"unknown data opcode {opcode:#x}")
    elif inside_message:
        raise WebSocketProtocolException("a new message inside a fragmented one")
