"""Binance's spot stream vocabulary: stream names, frame shapes, and one parser per stream kind.

Everything that knows a Binance field letter lives here (shared/binance-protocol.md section 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contract.symbols import stream_symbol

Fields = dict[str, Any]


class MalformedFrame(ValueError):
    """A frame that does not have the shape its stream promises."""


@dataclass(frozen=True, slots=True)
class StreamKind:
    """One kind of market stream: Binance's name for it, our key segment, and its parser."""

    name: str  # as in the stream name: "bookTicker"
    key_kind: str  # as in our Redis key: "bookticker"
    parse: Callable[[Any], tuple[int | None, Fields]]

    def stream(self, symbol: str) -> str:
        """The stream name for a symbol: ``btcusdt@bookTicker``."""
        return f"{stream_symbol(symbol)}@{self.name}"


def parse_book_ticker(data: Any) -> tuple[int | None, Fields]:
    """Parse a ``<symbol>@bookTicker`` payload into (update id, record fields).

    Sample raw payload (inside ``{"stream": "bnbusdt@bookTicker", "data": ...}`` when combined)::

        {
          "u": 400900217,       # order book update id, increasing per symbol
          "s": "BNBUSDT",       # symbol
          "b": "25.35190000",   # best bid price
          "B": "31.21000000",   # best bid quantity
          "a": "25.36520000",   # best ask price
          "A": "40.66000000"    # best ask quantity
        }

    Spot bookTicker carries no event time; the receive time is stamped by the caller.
    Prices and quantities stay the strings Binance sent.
    """
    try:
        u, s, b, bq, a, aq = data["u"], data["s"], data["b"], data["B"], data["a"], data["A"]
    except (KeyError, TypeError):
        raise MalformedFrame("bookTicker payload lacks one of u, s, b, B, a, A") from None
    if type(u) is not int or not (type(b) is type(bq) is type(a) is type(aq) is type(s) is str):
        raise MalformedFrame("bookTicker payload has a field of the wrong type")
    return u, {
        "symbol": s,
        "bid_price": b,
        "bid_quantity": bq,
        "ask_price": a,
        "ask_quantity": aq,
        "update_id": u,
    }


BOOK_TICKER = StreamKind("bookTicker", "bookticker", parse_book_ticker)
KINDS: dict[str, StreamKind] = {kind.name: kind for kind in (BOOK_TICKER,)}
KINDS_BY_KEY: dict[str, StreamKind] = {kind.key_kind: kind for kind in KINDS.values()}

# A server announcing it will go down soon (raw form; combined: stream "!serverShutdown").
SERVER_SHUTDOWN_EVENT = "serverShutdown"


def book_ticker_from_rest(entry: Any) -> Fields:
    """Record fields from one ``GET /api/v3/ticker/bookTicker`` entry (it has no update id).

    Sample::

        {"symbol": "LTCBTC", "bidPrice": "4.00000000", "bidQty": "431.00000000",
         "askPrice": "4.00000200", "askQty": "9.00000000"}
    """
    try:
        fields = {
            "symbol": entry["symbol"],
            "bid_price": entry["bidPrice"],
            "bid_quantity": entry["bidQty"],
            "ask_price": entry["askPrice"],
            "ask_quantity": entry["askQty"],
            "update_id": None,
        }
    except (KeyError, TypeError):
        raise MalformedFrame("bookTicker REST entry lacks a field") from None
    if not all(type(v) is str for k, v in fields.items() if k != "update_id"):
        raise MalformedFrame("bookTicker REST entry has a field of the wrong type")
    return fields


def response_error(msg: dict[str, Any]) -> str | None:
    """The error text of a reply to our request, in either form Binance uses, else None.

    Documented: ``{"code": 2, "msg": "...", "id": 1}``; seen on the wire:
    ``{"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2}``.
    """
    err = msg.get("error")
    if isinstance(err, dict):
        return f"{err.get('code')}: {err.get('msg')}"
    if "code" in msg and "msg" in msg:
        return f"{msg['code']}: {msg['msg']}"
    return None
