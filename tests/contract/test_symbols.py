"""Symbol spellings users may send, and the ones that must be refused."""

from __future__ import annotations

import pytest

from contract.keys import snapshot_key
from contract.kinds import key_kind
from contract.records import MalformedRecord, decode_record, encode_record
from contract.symbols import InvalidSymbol, normalize_symbol, stream_symbol


@pytest.mark.parametrize("raw", ["BTC_USDT", "BTCUSDT", "btcusdt", "btc_usdt", "Btc_Usdt"])
def test_every_documented_spelling_means_btcusdt(raw: str) -> None:
    assert normalize_symbol(raw) == "BTCUSDT"


def test_digits_and_non_ascii_letters_are_symbols() -> None:
    assert normalize_symbol("1000sats_usdt") == "1000SATSUSDT"
    assert normalize_symbol("币安人生USDT") == "币安人生USDT"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "2 to 20"),
        ("B", "2 to 20"),
        ("A" * 21, "2 to 20"),
        ("A" * 5000, "too long"),
        ("BTC__USDT", "one underscore"),
        ("_BTCUSDT", "one underscore"),
        ("BTCUSDT_", "one underscore"),
        ("BTC-USDT", "'-'"),
        ("BTC USDT", "' '"),
        ("btc%00usdt", "'%'"),
        ("../etc", "'.'"),
        ("BTC*", "'*'"),
        ("٣٣٣", "'٣'"),  # Arabic-Indic digits: not what Binance uses
    ],
)
def test_malformed_symbols_are_refused_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(InvalidSymbol, match=why.replace("*", r"\*").replace(".", r"\.")):
        normalize_symbol(raw)


def test_keys_are_readable_and_lower_case() -> None:
    assert snapshot_key(key_kind("bookTicker"), "BTCUSDT") == "transmute:bookticker:btcusdt"
    assert snapshot_key(key_kind("kline_1M"), "BTCUSDT") == "transmute:kline_1M:btcusdt"
    assert snapshot_key(key_kind("kline_1m"), "BTCUSDT") == "transmute:kline_1m:btcusdt"
    assert stream_symbol("BTCUSDT") == "btcusdt"


def test_record_round_trip_keeps_price_strings() -> None:
    record = {"symbol": "BTCUSDT", "bid_price": "0.00000001", "ts": 1, "as_of": 2}
    assert decode_record(encode_record(record)) == record


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"ts": 1}', b'{"as_of": "1"}'])
def test_what_is_not_a_record_is_rejected(raw: bytes) -> None:
    with pytest.raises(MalformedRecord):
        decode_record(raw)
