"""Numeric parameters (``max_age_ms``, ``limit``) take ASCII digits only, and at most 20 of them.

Python's ``int()`` takes ``"٣"`` (Arabic-Indic three), ``str.isdigit()`` takes ``"²"`` and
``"①"``, and ``int()`` refuses more than 4,300 digits: each once reached a view as a 500 with a
traceback in the log, or was taken as a number. Every one is the parameter's documented 400.
"""

from __future__ import annotations

import string
import time
from urllib.parse import quote

import fakeredis
import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.keys import LIVE, SYMBOLS_KEY, snapshot_key
from server import create_app
from server.params import whole_number
from tests.records import stream_state, vouched

NOT_NUMBERS = [
    "²",  # isdigit() says yes, int() says no
    "①",
    "٣",  # int() says 3
    "１０",  # fullwidth 10
    "5\n",
    " 5",
    "+5",
    "-0",
    "5.0",
    "1e3",
    "0x10",
    "1_000",
    "",
    "9" * 21,  # over Binance's 20 digits
    "1" * 5000,  # over int()'s 4,300
]


MAX_AGE_400 = {
    "status_code": 400,
    "error": "max_age_ms must be a whole number of milliseconds, 0 or more, of at most 20 digits.",
}
LIMIT_1100 = {
    "code": -1100,
    "msg": "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
}


def make_client(as_of_ago_ms: int = 100, voucher_px: int | None = 60_000) -> FlaskClient:
    """BTCUSDT streamed, its value confirmed ``as_of_ago_ms`` ago; ETHBTC listed."""
    fake: redis.Redis = fakeredis.FakeRedis()
    now = int(time.time() * 1000)
    record = {"symbol": "BTCUSDT", "bid_price": "1.0", "bid_quantity": "1.0", "ask_price": "1.1",
              "ask_quantity": "1.0", "update_id": 1, "ts": now - 1000, "as_of": now - as_of_ago_ms,
              "source": "stream"}  # fmt: skip
    vouched(fake, snapshot_key("bookticker", "btcusdt"), record, px=voucher_px)
    stream_state(fake, snapshot_key("bookticker", "btcusdt"), LIVE)
    fake.hset(SYMBOLS_KEY, mapping={"BTCUSDT": "TRADING", "ETHBTC": "TRADING"})
    return create_app({"demand_wait_ms": 0}, client=fake).test_client()


@pytest.fixture
def client() -> FlaskClient:
    return make_client()


@pytest.mark.parametrize("raw", NOT_NUMBERS)
def test_max_age_ms_that_is_not_ascii_digits_is_our_400(client: FlaskClient, raw: str) -> None:
    for response in (
        client.post(f"/snapshot/BTC_USDT?max_age_ms={quote(raw)}"),
        client.post("/snapshot/BTC_USDT", json={"max_age_ms": raw}),
        client.post(f"/snapshots?symbols=BTC_USDT&max_age_ms={quote(raw)}"),
    ):
        assert (response.status_code, response.get_json()) == (400, MAX_AGE_400)


@pytest.mark.parametrize("raw", ["0", "007", "60000", "9" * 20])
def test_max_age_ms_in_ascii_digits_is_taken(client: FlaskClient, raw: str) -> None:
    response = client.post(f"/snapshot/BTC_USDT?max_age_ms={raw}")
    # The stored value was confirmed 100 ms ago: 0 and 7 ms are too strict (500), the rest serve it.
    assert response.status_code == (500 if int(raw) < 100 else 200)


@pytest.mark.parametrize("raw", NOT_NUMBERS)
@pytest.mark.parametrize("endpoint", ["depth", "trades"])
def test_limit_that_is_not_ascii_digits_is_binance_1100(client: FlaskClient, endpoint: str, raw: str) -> None:
    response = client.get(f"/api/v3/{endpoint}?symbol=ETHBTC&limit={quote(raw)}")
    assert (response.status_code, response.get_json()) == (400, LIMIT_1100)


def test_limit_in_ascii_digits_out_of_range_is_binance_1130(client: FlaskClient) -> None:
    response = client.get("/api/v3/depth?symbol=ETHBTC&limit=0")
    assert (response.status_code, response.get_json()["code"]) == (400, -1130)


def test_a_depth_limit_of_20_digits_is_taken_as_binance_5000(client: FlaskClient) -> None:
    response = client.get("/api/v3/depth?symbol=ETHBTC&limit=" + "9" * 20)
    # Taken (more than 5,000 levels is 5,000): ETHBTC's book is asked for; nothing comes.
    assert (response.status_code, response.get_json()["code"]) == (503, -1001)


@pytest.fixture(scope="module")
def ageless_client() -> FlaskClient:
    """A value whose age stays 0, vouched for as long as the tests run."""
    return make_client(as_of_ago_ms=-(10**9), voucher_px=None)


@given(st.one_of(st.text(max_size=25), st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]))))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_text_is_a_400_unless_it_is_1_to_20_ascii_digits(ageless_client: FlaskClient, raw: str) -> None:
    number = 1 <= len(raw) <= 20 and all(c in string.digits for c in raw)
    snapshot = ageless_client.post(f"/snapshot/BTC_USDT?max_age_ms={quote(raw)}")
    depth = ageless_client.get(f"/api/v3/depth?symbol=ETHBTC&limit={quote(raw)}")
    if number:
        assert snapshot.status_code == 200
        # Any number of levels but 0 is asked of the messenger (nothing comes: 503); 0 is -1130.
        expected = (503, -1001) if int(raw) >= 1 else (400, -1130)
        assert (depth.status_code, depth.get_json()["code"]) == expected
    else:
        assert (snapshot.status_code, snapshot.get_json()) == (400, MAX_AGE_400)
        assert (depth.status_code, depth.get_json()) == (400, LIMIT_1100)
    assert whole_number(raw) == (int(raw) if number else None)


LIMIT_400 = {"status_code": 400, "error": "limit must be a whole number of levels from 1 to 5000."}


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/snapshot/BTC_USDT?max_age_ms=%C3%AA", {"max_age_ms": 4664635044}),  # CI's schemathesis case
        ("/snapshot/BTC_USDT?max_age_ms=-1", {"max_age_ms": 60000}),
        ("/snapshot/BTC_USDT/bookTicker?max_age_ms=x", {"max_age_ms": 60000}),
        ("/snapshots?max_age_ms=x", {"symbols": ["BTC_USDT"], "max_age_ms": 60000}),
    ],
)
def test_a_bad_max_age_ms_in_the_query_is_a_400_even_with_a_good_one_in_the_body(
    client: FlaskClient, url: str, body: dict[str, object]
) -> None:
    # The body's value is the one used, but the query's is the request's too: it was not hidden.
    response = client.post(url, json=body)
    assert (response.status_code, response.get_json()) == (400, MAX_AGE_400)


@pytest.mark.parametrize(
    "url", ["/snapshot/BTC_USDT/bookTicker?limit=0", "/snapshots?symbols=BTC_USDT&limit=x"]
)
def test_a_bad_limit_in_the_query_is_a_400_even_with_a_good_one_in_the_body(
    client: FlaskClient, url: str
) -> None:
    response = client.post(url, json={"symbols": ["BTC_USDT"], "limit": 5})
    assert (response.status_code, response.get_json()) == (400, LIMIT_400)


def test_the_bodys_good_value_is_used_over_the_querys_good_one(client: FlaskClient) -> None:
    # Confirmed 100 ms ago: the query's 60000 would serve it, the body's 7 does not (500).
    assert client.post("/snapshot/BTC_USDT?max_age_ms=60000", json={"max_age_ms": 7}).status_code == 500
    assert client.post("/snapshot/BTC_USDT?max_age_ms=7", json={"max_age_ms": 60000}).status_code == 200


@pytest.mark.parametrize(
    ("url", "body", "error"),
    [
        ("/snapshot/BTC_USDT", {"max_age_ms": "60000"}, MAX_AGE_400),
        ("/snapshots", {"symbols": ["BTC_USDT"], "max_age_ms": "60000"}, MAX_AGE_400),
        ("/snapshot/BTC_USDT/bookTicker", {"limit": "5"}, LIMIT_400),
        ("/snapshots", {"symbols": ["BTC_USDT"], "limit": "5"}, LIMIT_400),
    ],
)
def test_digits_in_a_json_string_are_not_a_number_in_the_body(
    client: FlaskClient, url: str, body: dict[str, object], error: dict[str, object]
) -> None:
    # The document types them integers in the body (digits are the query's form): {"max_age_ms":
    # "60000"} was answered 200, a request the document calls invalid (schemathesis ST201).
    response = client.post(url, json=body)
    assert (response.status_code, response.get_json()) == (400, error)


def test_symbols_in_the_body_are_a_json_list_not_comma_separated_text(client: FlaskClient) -> None:
    response = client.post("/snapshots", json={"symbols": "BTC_USDT"})
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("symbols must be a list of symbols")
    # In the query, comma-separated text is the documented form; in the body, a list.
    assert client.post("/snapshots?symbols=BTC_USDT,").status_code == 200
    assert client.post("/snapshots", json={"symbols": ["BTC_USDT"]}).status_code == 200
