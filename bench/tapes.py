"""Pre-encoded bookTicker WebSocket frames, one tape per symbol, for the cheap feed (bench/feed.py).

A frame is what Binance sends on a combined stream, already framed for the wire (a server's text
frame: no mask)::

    \\x81\\x7e\\x00\\x93{"stream":"btcusdt@bookTicker","data":{"u":100000000001,"s":"BTCUSDT",
    "b":"25001.10010000","B":"2.50000000","a":"25002.10010000","A":"3.25000000"}}

``u`` goes up by one with every frame of a symbol and stays twelve digits long, and the prices
cycle through VARIANTS values of the same length, so a frame's bytes are three pieces made in
advance: head (WebSocket header and everything up to ``u``), ``u``'s digits, and tail. What was
sent last for a symbol follows from its ``u`` alone (``Tape.data``).
"""

from __future__ import annotations

from typing import Any

from bench.wire import OP_TEXT, ws_header

U_START = 10**11  # twelve digits: a frame's length never changes
VARIANTS = 8  # a power of two: the variant of u is u & (VARIANTS - 1)


def values(v: int) -> dict[str, str]:
    """Best bid and ask of variant ``v``: strings of a fixed length, as Binance spells them."""
    return {
        "b": f"{25000 + v}.1{v:03d}0000",
        "B": f"{v + 1}.50000000",
        "a": f"{25001 + v}.1{v:03d}0000",
        "A": f"{v + 2}.25000000",
    }


class Tape:
    """One symbol's frames: its last update id, and the pieces of its frames on either URL form."""

    __slots__ = ("combined", "raw", "stream", "symbol", "u")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol.upper()
        self.stream = f"{symbol.lower()}@bookTicker"
        self.u = U_START
        self.combined = self._pieces(b'{"stream":"' + self.stream.encode() + b'","data":{"u":', b"}}")
        self.raw = self._pieces(b'{"u":', b"}")

    def _pieces(self, before_u: bytes, after: bytes) -> tuple[bytes, tuple[bytes, ...]]:
        tails = []
        for v in range(VARIANTS):
            fields = "".join(f',"{k}":"{x}"' for k, x in values(v).items())
            tails.append(f',"s":"{self.symbol}"{fields}'.encode() + after)
        length = len(before_u) + len(str(U_START)) + len(tails[0])
        assert all(len(t) == len(tails[0]) for t in tails)
        return ws_header(OP_TEXT, length) + before_u, tuple(tails)

    def data(self) -> dict[str, Any] | None:
        """The payload of the last frame made, None if none was."""
        if self.u == U_START:
            return None
        return {"u": self.u, "s": self.symbol, **values(self.u & (VARIANTS - 1))}


# A connection's tape with the pieces of its URL form: (tape, head, tails).
Entry = tuple[Tape, bytes, tuple[bytes, ...]]


def entry(tape: Tape, combined: bool) -> Entry:
    """What a connection needs to make frames of ``tape``."""
    head, tails = tape.combined if combined else tape.raw
    return tape, head, tails


def frame(item: Entry, u: int) -> bytes:
    """The frame of ``item``'s tape carrying update id ``u``."""
    _, head, tails = item
    return head + b"%d" % u + tails[u & (VARIANTS - 1)]


def batch(entries: list[Entry], start: int, frames: int) -> tuple[bytes, int]:
    """``frames`` frames in one buffer, rotating over ``entries`` from ``start``: (bytes, where the
    next batch starts). Each frame takes its symbol's next update id."""
    out: list[bytes] = []
    append, n, i = out.append, len(entries), start
    for _ in range(frames):
        if i >= n:
            i = 0
        tape, head, tails = entries[i]
        i += 1
        tape.u = u = tape.u + 1
        append(head)
        append(b"%d" % u)
        append(tails[u & (VARIANTS - 1)])
    return b"".join(out), i
