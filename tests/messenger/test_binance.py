"""Parsing real recorded Binance frames (tests/data, from shared/fixtures) and broken ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from messenger.binance import (
    BOOK_TICKER,
    MalformedFrame,
    book_ticker_from_rest,
    parse_book_ticker,
    response_error,
)

DATA = Path(__file__).parent.parent / "data"


def recorded(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (DATA / name).read_bytes().splitlines() if line.strip()]


def test_every_recorded_spot_book_ticker_frame_parses_to_its_exact_strings() -> None:
    frames = recorded("spot-bookTicker-2021-10-12.jsonl")
    assert len(frames) == 84
    for frame in frames:
        data = frame["data"]
        u, fields = parse_book_ticker(data)
        assert frame["stream"] == BOOK_TICKER.stream(data["s"])
        assert u == data["u"] == fields["update_id"]
        assert fields == {
            "symbol": data["s"],
            "bid_price": data["b"],
            "bid_quantity": data["B"],
            "ask_price": data["a"],
            "ask_quantity": data["A"],
            "update_id": data["u"],
        }


def test_recorded_update_ids_increase_per_symbol() -> None:
    last: dict[str, int] = {}
    for frame in recorded("spot-bookTicker-2021-10-12.jsonl"):
        u, fields = parse_book_ticker(frame["data"])
        assert u is not None
        assert u > last.get(fields["symbol"], 0)
        last[fields["symbol"]] = u


def test_book_ticker_frames_in_the_mixed_recording_parse() -> None:
    lines = (DATA / "spot-combined-stream-2021-10-12.log").read_bytes().splitlines()[1:]
    frames = [orjson.loads(line.partition(b": ")[2]) for line in lines if line.strip()]
    books = [f for f in frames if f["stream"].endswith("@bookTicker")]
    assert len(books) == 84
    assert all(parse_book_ticker(f["data"])[1]["bid_price"] == f["data"]["b"] for f in books)


def test_usdm_frames_with_extra_fields_still_parse() -> None:
    frame = recorded("usdm-bookTicker-2021-07-22.jsonl")[0]["data"]
    assert parse_book_ticker(frame)[1]["ask_price"] == frame["a"]


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "x",
        {},
        {"u": 1, "s": "BTCUSDT", "b": "1", "B": "1", "a": "1"},
        {"u": "1", "s": "BTCUSDT", "b": "1", "B": "1", "a": "1", "A": "1"},
        {"u": 1, "s": "BTCUSDT", "b": 1.5, "B": "1", "a": "1", "A": "1"},
        {"u": True, "s": "BTCUSDT", "b": "1", "B": "1", "a": "1", "A": "1"},
    ],
)
def test_malformed_payloads_raise_malformed_frame(data: Any) -> None:
    with pytest.raises(MalformedFrame):
        parse_book_ticker(data)


def test_rest_book_ticker_keeps_strings_and_has_no_update_id() -> None:
    entry = {"symbol": "LTCBTC", "bidPrice": "4.00000000", "bidQty": "431.00000000",
             "askPrice": "4.00000200", "askQty": "9.00000000"}  # fmt: skip
    assert book_ticker_from_rest(entry) == {
        "symbol": "LTCBTC", "bid_price": "4.00000000", "bid_quantity": "431.00000000",
        "ask_price": "4.00000200", "ask_quantity": "9.00000000", "update_id": None,
    }  # fmt: skip
    with pytest.raises(MalformedFrame):
        book_ticker_from_rest({**entry, "bidPrice": 4.0})


def test_reply_errors_in_both_documented_and_observed_forms() -> None:
    assert response_error({"result": None, "id": 1}) is None
    assert response_error({"code": 0, "msg": "Unknown property", "id": 1}) == "0: Unknown property"
    nested = {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2}
    assert response_error(nested) == "2: Invalid request: invalid stream"
