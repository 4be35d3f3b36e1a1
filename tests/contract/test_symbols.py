"""Symbol spellings users may send, and the ones that must be refused."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from redis.crc import key_slot

from contract.keys import (
    DEMAND_KEY,
    KEY_BUCKETS,
    MEMBERS_KEY,
    SYMBOLS_KEY,
    WATCHED_KEY,
    member_key,
    member_streams_key,
    snapshot_key,
    staged_key,
    symbol_tag,
    voucher_key,
)
from contract.kinds import key_kind
from contract.klines import klines_key
from contract.records import MalformedRecord, decode_record, encode_record
from contract.symbols import InvalidSymbol, normalize_symbol, stream_symbol
from contract.trade_history import tail_key

EXCHANGE_INFO = Path(__file__).parents[2] / "simulator" / "data" / "exchangeInfo-spot-2021-10-12.json"


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
    assert snapshot_key(key_kind("bookTicker"), "BTCUSDT") == "transmute:bookticker:btcusdt:{9}"
    assert snapshot_key(key_kind("kline_1M"), "BTCUSDT") == "transmute:kline_1M:btcusdt:{9}"
    assert snapshot_key(key_kind("kline_1m"), "btcusdt") == "transmute:kline_1m:btcusdt:{9}"
    assert stream_symbol("BTCUSDT") == "btcusdt"


def test_a_symbols_keys_share_its_buckets_slot_and_the_market_spreads_over_every_bucket() -> None:
    """What one script reads or writes together is in one slot of a Redis Cluster; the buckets
    spread the market (1,695 symbols) over the cluster's primaries."""
    symbol = "ETHBTC"
    keys = [snapshot_key("bookticker", symbol), snapshot_key("depth", symbol), tail_key("trade", symbol),
            klines_key("1m", symbol), voucher_key("5f3a9c1e.2", 3, symbol_tag(symbol)),
            staged_key("5f3a9c1e", snapshot_key("depth", symbol))]  # fmt: skip
    assert {key_slot(k.encode()) for k in keys} == {key_slot(symbol_tag(symbol).encode())}
    symbols = [s["symbol"] for s in orjson.loads(EXCHANGE_INFO.read_bytes())["symbols"]]
    per_bucket = Counter(symbol_tag(s) for s in symbols)
    assert len(per_bucket) == KEY_BUCKETS
    assert max(per_bucket.values()) < 2 * len(symbols) / KEY_BUCKETS
    control = [MEMBERS_KEY, DEMAND_KEY, SYMBOLS_KEY, WATCHED_KEY, member_key("x"), member_streams_key("x")]
    assert len({key_slot(k.encode()) for k in control}) == 1


def test_record_round_trip_keeps_price_strings() -> None:
    record = {"symbol": "BTCUSDT", "bid_price": "0.00000001", "ts": 1, "as_of": 2}
    assert decode_record(encode_record(record)) == record


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"ts": 1}', b'{"as_of": "1"}'])
def test_what_is_not_a_record_is_rejected(raw: bytes) -> None:
    with pytest.raises(MalformedRecord):
        decode_record(raw)
