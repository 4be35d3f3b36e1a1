"""messenger.frames: what a server sends, cut into messages whatever the reads' boundaries.

The frames are built here to RFC 6455 (not by the code under test) and handed over in reads split
at every offset, or at random offsets (the seed is in the test's id), as TCP may deliver them.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Iterable, Iterator

import pytest
from websocket import WebSocketConnectionClosedException, WebSocketProtocolException

from messenger.frames import (
    BINARY,
    CHUNK_BYTES,
    CLOSE,
    CONTINUATION,
    MAX_FRAGMENTS,
    PING,
    PONG,
    TEXT,
    read_frames,
)


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bytes | None = None) -> bytes:
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask is not None:
        payload = mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


class Reads:
    """A socket's recv: the stream in the given pieces, then the peer gone (b"")."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces: Iterator[bytes] = iter(pieces)
        self.calls = 0

    def __call__(self, bufsize: int) -> bytes:
        self.calls += 1
        piece = next(self._pieces, b"")
        assert len(piece) <= bufsize
        return piece


class Seen:
    def __init__(self, stop_on_close: bool = True) -> None:
        self.texts: list[bytes] = []
        self.controls: list[tuple[int, bytes]] = []
        self.heard = 0
        self.stop_on_close = stop_on_close

    def text(self, payload: bytes, now: float) -> None:
        self.texts.append(payload)

    def control(self, opcode: int, payload: bytes, now: float) -> bool:
        self.controls.append((opcode, payload))
        return opcode == CLOSE and self.stop_on_close

    def on_heard(self, now: float) -> None:
        self.heard += 1


def read(stream: bytes, cuts: list[int], seen: Seen, **kw: int) -> Reads:
    """Reads ending at the cuts, none longer than the reader asks for."""
    bounds = sorted({0, *cuts, *range(0, len(stream), CHUNK_BYTES), len(stream)})
    reads = Reads(stream[a:b] for a, b in itertools.pairwise(bounds) if b > a)
    read_frames(reads, seen.text, seen.control, seen.on_heard, **kw)
    return reads


MESSAGES = [b"", b"x", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536, b"e" * 70001]
STREAM = b"".join(frame(TEXT, m) for m in MESSAGES) + frame(CLOSE, b"\x03\xe8")


def test_every_length_form_read_whole_in_one_read() -> None:
    seen = Seen()
    reads = read(STREAM, [], seen)
    assert seen.texts == MESSAGES
    assert seen.controls == [(CLOSE, b"\x03\xe8")]
    assert reads.calls == seen.heard == -(-len(STREAM) // CHUNK_BYTES)


@pytest.mark.parametrize("cut", range(0, 140))
def test_a_read_may_end_anywhere_in_a_frame(cut: int) -> None:
    small = b"".join(frame(TEXT, m) for m in (b"hello", b"a" * 125, b"b" * 130)) + frame(CLOSE, b"")
    seen = Seen()
    read(small, [cut, cut + 1, cut + 3], seen)
    assert seen.texts == [b"hello", b"a" * 125, b"b" * 130]


@pytest.mark.parametrize("run", range(20))
def test_random_reads_give_every_message_in_order(run: int) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")  # shown with a failure
    rng = random.Random(seed)
    messages = [rng.randbytes(rng.choice([0, 3, 125, 126, 300, 65535, 65536, 100_000])) for _ in range(40)]
    stream = b""
    expected: list[bytes] = []
    for m in messages:
        if rng.random() < 0.3 and len(m) > 2:  # fragmented, a ping inside
            a, b = sorted(rng.sample(range(1, len(m)), 2)) if len(m) > 3 else (1, 2)
            stream += (
                frame(TEXT, m[:a], fin=False) + frame(PING, b"p") + frame(CONTINUATION, m[a:b], fin=False)
            )
            stream += frame(CONTINUATION, m[b:])
        else:
            stream += frame(TEXT, m)
        expected.append(m)
    stream += frame(CLOSE, b"")
    cuts = []
    at = 0
    while at < len(stream):
        at += rng.randint(1, 65536)
        cuts.append(at)
    seen = Seen()
    read(stream, [c for c in cuts if c < len(stream)], seen)
    assert seen.texts == expected


def test_a_fragmented_message_with_controls_between_its_fragments() -> None:
    stream = (
        frame(TEXT, b'{"a":', fin=False)
        + frame(PING, b"hi")
        + frame(CONTINUATION, b"1", fin=False)
        + frame(PONG, b"")
        + frame(CONTINUATION, b"}")
        + frame(TEXT, b"next")
        + frame(CLOSE, b"\x03\xf0bye")
    )
    seen = Seen()
    read(stream, [], seen)
    assert seen.texts == [b'{"a":1}', b"next"]
    assert seen.controls == [(PING, b"hi"), (PONG, b""), (CLOSE, b"\x03\xf0bye")]


def test_binary_messages_are_passed_over() -> None:
    seen = Seen()
    read(frame(BINARY, b"\x00\x01") + frame(BINARY, b"a", fin=False) + frame(CONTINUATION, b"b")
         + frame(TEXT, b"t") + frame(CLOSE, b""), [], seen)  # fmt: skip
    assert seen.texts == [b"t"]


def test_nothing_after_the_close_is_read() -> None:
    seen = Seen()
    reads = read(frame(CLOSE, b"") + frame(TEXT, b"late"), [2], seen)
    assert seen.texts == []
    assert reads.calls == 1


def test_the_peer_gone_mid_frame_or_between_frames_ends_the_reading() -> None:
    for stream in (frame(TEXT, b"whole"), frame(TEXT, b"whole")[:-2]):
        seen = Seen()
        with pytest.raises(WebSocketConnectionClosedException):
            read(stream, [], seen)


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (frame(TEXT, b"x", mask=b"abcd"), "masked"),
        (frame(TEXT, b"x", rsv=0x40), "reserved"),
        (frame(0x3, b"x"), "unknown data opcode"),
        (frame(0xB, b"x"), "unknown control opcode"),
        (frame(PING, b"x", fin=False), "fragmented or long control"),
        (frame(PING, b"x" * 126), "fragmented or long control"),
        (frame(CONTINUATION, b"x"), "continuation frame outside"),
        (frame(TEXT, b"x", fin=False) + frame(TEXT, b"y"), "new message inside"),
        (frame(TEXT, b"x" * 2000), "a frame of 2000 bytes"),
        (frame(TEXT, b"x" * 600, fin=False) + frame(CONTINUATION, b"y" * 600), "a message of over"),
    ],
)
def test_what_a_server_must_not_send_ends_the_connection(stream: bytes, why: str) -> None:
    seen = Seen()
    with pytest.raises(WebSocketProtocolException, match=why):
        read(stream + frame(TEXT, b"after"), [], seen, max_message_bytes=1000)
    assert b"after" not in seen.texts


def test_a_message_in_endless_empty_fragments_is_refused() -> None:
    stream = frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"", fin=False) * (MAX_FRAGMENTS + 1)
    with pytest.raises(WebSocketProtocolException, match="fragments"):
        read(stream + frame(CONTINUATION, b"x"), [], Seen())


@pytest.mark.parametrize("b0", [0x80 | 0x40 | TEXT, 0x80 | 0x3, 0x80 | PING])
def test_a_bad_header_is_refused_before_its_payload_arrives(b0: int) -> None:
    header = bytes([b0, 126]) + struct.pack("!H", 60000)  # the payload never comes
    reads = Reads([header])
    with pytest.raises(WebSocketProtocolException):
        read_frames(reads, Seen().text, Seen().control, Seen().on_heard)
    assert reads.calls == 1
