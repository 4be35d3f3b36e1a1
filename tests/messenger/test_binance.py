"""Parsing real recorded Binance frames (tests/data, from shared/fixtures) and broken ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from contract import kinds as contract_kinds
from messenger.binance import (
    BOOK_TICKER,
    KINDS,
    MalformedFrame,
    avg_price_from_rest,
    book_ticker_from_rest,
    depth_from_rest,
    kline_from_rest,
    parse_book_ticker,
    response_error,
    ticker_from_rest,
)

DATA = Path(__file__).parent.parent / "data"


def recorded(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (DATA / name).read_bytes().splitlines() if line.strip()]


def test_every_recorded_spot_book_ticker_frame_parses_to_its_exact_strings() -> None:
    frames = recorded("spot-bookTicker-2021-10-12.jsonl")
    assert len(frames) == 84
    for frame in frames:
        data = frame["data"]
        u, fields = parse_book_ticker(data, data["s"])
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
        u, fields = parse_book_ticker(frame["data"], "X")
        assert u is not None
        assert u > last.get(fields["symbol"], 0)
        last[fields["symbol"]] = u


def test_book_ticker_frames_in_the_mixed_recording_parse() -> None:
    lines = (DATA / "spot-combined-stream-2021-10-12.log").read_bytes().splitlines()[1:]
    frames = [orjson.loads(line.partition(b": ")[2]) for line in lines if line.strip()]
    books = [f for f in frames if f["stream"].endswith("@bookTicker")]
    assert len(books) == 84
    assert all(parse_book_ticker(f["data"], "X")[1]["bid_price"] == f["data"]["b"] for f in books)


def test_usdm_frames_with_extra_fields_still_parse() -> None:
    frame = recorded("usdm-bookTicker-2021-07-22.jsonl")[0]["data"]
    assert parse_book_ticker(frame, "X")[1]["ask_price"] == frame["a"]


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
        parse_book_ticker(data, "BTCUSDT")


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


def recorded_log(stream_suffix: str) -> list[dict[str, Any]]:
    lines = (DATA / "spot-combined-stream-2021-10-12.log").read_bytes().splitlines()[1:]
    frames = [orjson.loads(line.partition(b": ")[2]) for line in lines if line.strip()]
    return [f for f in frames if f["stream"].endswith(stream_suffix)]


def test_every_kind_the_contract_names_has_a_parser_and_a_stream_name() -> None:
    assert set(KINDS) == set(contract_kinds.KINDS)
    assert KINDS["depth5"].stream("BTCUSDT") == "btcusdt@depth5@100ms"
    assert KINDS["kline_1M"].stream("BTCUSDT") == "btcusdt@kline_1M"
    assert KINDS["kline_1M"].key_kind == "kline_1M"
    assert KINDS["aggTrade"].key_kind == "aggtrade"


def test_recorded_agg_trades_parse_to_exact_strings_ordered_by_agg_id() -> None:
    frames = recorded_log("@aggTrade")
    assert len(frames) == 2
    for frame in frames:
        data = frame["data"]
        order, fields = KINDS["aggTrade"].parse(data, data["s"])
        assert order == data["a"]
        assert (fields["price"], fields["quantity"], fields["is_buyer_maker"]) == (
            data["p"],
            data["q"],
            data["m"],
        )
        assert (fields["first_trade_id"], fields["last_trade_id"]) == (data["f"], data["l"])


def test_recorded_klines_parse_and_order_by_window_then_event_time() -> None:
    frames = recorded_log("@kline_1m")
    assert len(frames) == 2
    for frame in frames:
        data, k = frame["data"], frame["data"]["k"]
        order, fields = KINDS["kline_1m"].parse(data, data["s"])
        assert order == (k["t"], data["E"], k["n"])
        assert [fields[f] for f in ("open", "high", "low", "close", "volume")] == [k[x] for x in "ohlcv"]
        assert (fields["interval"], fields["closed"], fields["trades"]) == ("1m", k["x"], k["n"])
    later = dict(frames[0]["data"], E=frames[0]["data"]["E"] + 1)
    assert KINDS["kline_1m"].parse(later, "X")[0] > KINDS["kline_1m"].parse(frames[0]["data"], "X")[0]


SAMPLES: dict[str, dict[str, Any]] = {
    "trade": {"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100",
              "T": 1672515782136, "m": True, "M": True},
    "miniTicker": {"e": "24hrMiniTicker", "E": 1672515782136, "s": "BNBBTC", "c": "0.0025", "o": "0.0010",
                   "h": "0.0025", "l": "0.0010", "v": "10000", "q": "18"},
    "ticker": {"e": "24hrTicker", "E": 1672515782136, "s": "BNBBTC", "p": "0.0015",
               "P": "250.00", "w": "0.0018", "x": "0.0009", "c": "0.0025", "Q": "10", "b": "0.0024",
               "B": "10", "a": "0.0026", "A": "100", "o": "0.0010", "h": "0.0025", "l": "0.0010",
               "v": "10000", "q": "18", "O": 0, "C": 86400000, "F": 0, "L": 18150, "n": 18151},
    "avgPrice": {"e": "avgPrice", "E": 1693907033000, "s": "BTCUSDT", "i": "5m", "w": "25776.86000000",
                 "T": 1693907032213},
    "depth5": {"lastUpdateId": 160, "bids": [["0.0024", "10"]], "asks": [["0.0026", "100"]]},
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_documented_samples_parse_with_strings_kept(kind: str) -> None:
    order, fields = KINDS[kind].parse(SAMPLES[kind], "BNBBTC")
    assert order is not None
    assert fields["symbol"] in ("BNBBTC", "BTCUSDT")
    strings = [v for k, v in SAMPLES[kind].items() if isinstance(v, str) and v[0].isdigit() and k != "e"]
    assert all(s in fields.values() for s in strings)  # every price and quantity, unchanged


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_a_missing_or_mistyped_field_is_a_malformed_frame(kind: str) -> None:
    sample = SAMPLES[kind]
    first = next(k for k in sample if k != "e")  # the event type is not needed
    with pytest.raises(MalformedFrame):
        KINDS[kind].parse({k: v for k, v in sample.items() if k != first}, "BNBBTC")
    numeric = next(k for k, v in sample.items() if isinstance(v, int) and not isinstance(v, bool))
    with pytest.raises(MalformedFrame):
        KINDS[kind].parse({**sample, numeric: str(sample[numeric])}, "BNBBTC")


def test_depth_levels_must_be_pairs_of_strings() -> None:
    for bad in ([["1", 2]], [["1"]], "x", [[1.5, "2"]]):
        with pytest.raises(MalformedFrame):
            KINDS["depth5"].parse({"lastUpdateId": 1, "bids": bad, "asks": []}, "X")


def test_rest_twins_of_the_timed_kinds_give_the_streams_record_shapes() -> None:
    row = [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
           1499644799999, "2434.19055334", 308, "1756.87402397", "28.46694368", "0"]  # fmt: skip
    kline = kline_from_rest(row, "BNBBTC", "1M")
    candle = {"t": 1, "T": 2, "s": "BNBBTC", "i": "1M", "f": 1, "L": 2, "o": "1", "c": "1", "h": "1",
              "l": "1", "v": "1", "n": 1, "x": False, "q": "1", "V": "1", "Q": "1"}  # fmt: skip
    streamed = KINDS["kline_1M"].parse({"E": 1, "s": "BNBBTC", "k": candle}, "BNBBTC")[1]
    assert set(kline) == set(streamed)
    assert (kline["open"], kline["close"], kline["trades"], kline["interval"]) == (
        "0.01634790",
        "0.01577100",
        308,
        "1M",
    )

    entry = {"symbol": "BNBBTC", "priceChange": "-94.99999800", "priceChangePercent": "-95.960",
             "weightedAvgPrice": "0.29628482", "prevClosePrice": "0.10002000", "lastPrice": "4.00000200",
             "lastQty": "200.00000000", "bidPrice": "4.00000000", "bidQty": "100.00000000",
             "askPrice": "4.00000200", "askQty": "100.00000000", "openPrice": "99.00000000",
             "highPrice": "100.00000000", "lowPrice": "0.10000000", "volume": "8913.30000000",
             "quoteVolume": "15.30000000", "openTime": 1499783499040, "closeTime": 1499869899040,
             "firstId": 28385, "lastId": 28460, "count": 76}  # fmt: skip
    full = ticker_from_rest(entry, mini=False)
    assert set(full) == set(KINDS["ticker"].parse(SAMPLES["ticker"], "BNBBTC")[1])
    assert full["close"] == "4.00000200"
    mini = ticker_from_rest(entry, mini=True)
    assert set(mini) == set(KINDS["miniTicker"].parse(SAMPLES["miniTicker"], "BNBBTC")[1])

    avg = avg_price_from_rest({"mins": 5, "price": "9.35751834", "closeTime": 1694061154503}, "BTCUSDT")
    assert set(avg) == set(KINDS["avgPrice"].parse(SAMPLES["avgPrice"], "BTCUSDT")[1])
    assert (avg["price"], avg["interval"]) == ("9.35751834", "5m")

    order, book = depth_from_rest(
        {"lastUpdateId": 9, "bids": [["1", "1"]] * 30, "asks": [["2", "1"]] * 30}, "X", 5
    )
    assert (order, len(book["bids"]), len(book["asks"])) == (9, 5, 5)
    with pytest.raises(MalformedFrame):
        kline_from_rest(["x"], "X", "1m")
