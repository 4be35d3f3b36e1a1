"""Full order books through the whole stack, judged by the exchange's own record.

The simulator keeps a real book per symbol and journals every change; ``GET /_sim/book?at=N`` is
its book as it was at update id N. Every book Transmute serves at ``lastUpdateId`` N must equal
it level for level, while the exchange drops diff events (gaps), swaps them, and delays snapshots;
and while a book is out of sync the answer is 503, never a wrong book.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import ccxt
import pytest
from binance.client import Client

from tests.processes import Gunicorn, Messenger, Simulator, free_port, http, symbol_list_loaded, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MessengerFactory = Callable[..., Messenger]
SimFactory = Callable[..., Simulator]
PARTIAL = "X-Transmute-Depth-Partial"


def depth(url: str, symbol: str, limit: int | None = None) -> tuple[int, dict[str, str], Any]:
    query = {"symbol": symbol} if limit is None else {"symbol": symbol, "limit": limit}
    return http("GET", f"{url}/api/v3/depth?{urlencode(query)}")


def exchange_book(sim: Simulator, symbol: str, at: int, limit: int) -> dict[str, Any]:
    """The simulator's book as it was at update id ``at``, its top ``limit`` levels."""
    status, _, body = http(
        "GET", f"{sim.rest_url}/_sim/book?{urlencode({'symbol': symbol, 'at': at, 'limit': limit})}"
    )
    assert status == 200, (at, status, body)
    return dict(body)


def header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the messenger's metrics (0 if absent)."""
    text = http("GET", url)[2]
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def judge(sim: Simulator, symbol: str, limit: int, headers: dict[str, str], body: Any) -> int:
    """Check one 200 answer against the exchange's book at its lastUpdateId; returns levels served."""
    at = body["lastUpdateId"]
    theirs = exchange_book(sim, symbol, at, limit)
    partial = header(headers, PARTIAL) or ""
    for side in ("bids", "asks"):
        ours = body[side]
        assert len(ours) <= limit
        if side in partial:
            # Fewer levels than asked, for want of exact knowledge: each one held is still exact.
            assert len(ours) < min(limit, len(theirs[side])), (side, at, limit)
            assert ours == theirs[side][: len(ours)], (side, at, limit)
        else:
            assert ours == theirs[side], (side, at, limit, len(ours), len(theirs[side]))
    return len(body["bids"])


def test_every_book_served_equals_the_exchanges_at_its_update_id_through_gaps_swaps_and_slow_snapshots(
    sim_factory: SimFactory, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    # 3,000 levels a side under a 5,000-level snapshot: the whole book is known, to any limit.
    sim = sim_factory("--rate", "20", "--book-levels", "3000", "--book-rate", "300")
    port = free_port()
    messenger_factory(sim, "btcusdt", "--streams", "depth", DEPTH_SNAPSHOT_LIMIT=5000, METRICS_PORT=port)
    metrics = f"http://127.0.0.1:{port}/metrics"
    symbol_list_loaded(real_redis)
    wait_until(lambda: depth(gunicorn.url, "BTCUSDT", 5000)[0] == 200, 20, what="the first full book")
    checked: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    faults: Counter[str] = Counter()
    seen_ids: set[int] = set()
    next_fault = time.monotonic() + 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        limit = rng.choice((5, 100, 1000, 5000))
        status, headers, body = depth(gunicorn.url, "BTCUSDT", limit)
        statuses[status] += 1
        if status == 503:
            assert body["code"] == -1001 and header(headers, "Retry-After"), body
        else:
            assert status == 200, body
            assert header(headers, PARTIAL) is None  # the whole book is known here
            judge(sim, "BTCUSDT", limit, headers, body)
            checked[limit] += 1
            seen_ids.add(body["lastUpdateId"])
        if time.monotonic() >= next_fault:
            fault = rng.choice(("drop_diff", "drop_diff", "swap_diff", "depth_delay"))
            params = {"delay_ms": 1500, "count": 1} if fault == "depth_delay" else {"symbol": "BTCUSDT"}
            sim.fault(fault, **params)
            faults[fault] += 1
            next_fault = time.monotonic() + rng.uniform(3, 6)
    print(f"faults {dict(faults)}, statuses {dict(statuses)}, checked by limit {dict(checked)}")
    assert all(checked[limit] >= 5 for limit in (5, 100, 1000, 5000)), checked
    assert len(seen_ids) >= 20  # the book moved while it was judged
    if faults["drop_diff"]:
        resyncs = metric(metrics, "transmute_messenger_order_book_resyncs_total", reason="gap")
        assert resyncs >= 1, "a dropped diff event went unnoticed"


def test_a_gap_makes_the_book_unavailable_never_wrong_until_it_has_resynchronized(
    sim_factory: SimFactory, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    sim = sim_factory("--rate", "20", "--book-levels", "2000", "--book-rate", "200")
    port = free_port()
    messenger_factory(sim, "ethbtc", "--streams", "depth", METRICS_PORT=port)
    metrics = f"http://127.0.0.1:{port}/metrics"
    symbol_list_loaded(real_redis)
    wait_until(lambda: depth(gunicorn.url, "ETHBTC")[0] == 200, 20, what="the first full book")
    before = metric(metrics, "transmute_messenger_order_book_resyncs_total", reason="gap")
    # The next snapshot answers 3 s late: the resync is slow enough to be seen from outside.
    sim.fault("depth_delay", delay_ms=3000, count=1)
    sim.fault("drop_diff", symbol="ETHBTC")
    wait_until(
        lambda: metric(metrics, "transmute_messenger_order_book_resyncs_total", reason="gap") > before,
        10,
        what="the gap noticed",
    )
    unavailable = served = 0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        status, headers, body = depth(gunicorn.url, "ETHBTC", 100)
        if status == 503:
            assert body == {"code": -1001, "msg": body["msg"]} and header(headers, "Retry-After")
            unavailable += 1
        else:
            assert status == 200
            judge(sim, "ETHBTC", 100, headers, body)  # if anything is served, it is right
            served += 1
    assert unavailable > 0, "the book was served while out of sync"
    wait_until(lambda: depth(gunicorn.url, "ETHBTC", 100)[0] == 200, 15, what="the book back in sync")
    status, headers, body = depth(gunicorn.url, "ETHBTC", 100)
    judge(sim, "ETHBTC", 100, headers, body)
    assert len(body["bids"]) == len(body["asks"]) == 100
    status, _, own = http("POST", f"{gunicorn.url}/snapshot/ETH_BTC/depth?limit=5")
    assert status == 200 and len(own["bids"]) == 5 and own["update_id"] >= body["lastUpdateId"]


def test_a_limit_beyond_the_snapshot_serves_only_exact_levels_and_says_so(
    sim_factory: SimFactory, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> None:
    # 6,000 levels a side, a 1,000-level snapshot (the default): nothing behind level 1,000 is known.
    sim = sim_factory("--rate", "20", "--book-levels", "6000", "--book-rate", "200")
    messenger_factory(sim, "bnbbtc", "--streams", "depth")
    symbol_list_loaded(real_redis)
    wait_until(lambda: depth(gunicorn.url, "BNBBTC", 5000)[0] == 200, 20, what="the first full book")
    for _ in range(5):
        status, headers, body = depth(gunicorn.url, "BNBBTC", 5000)
        assert status == 200
        served = judge(sim, "BNBBTC", 5000, headers, body)
        # About the snapshot's 1,000: levels added inside its reach since are exact too.
        assert 0 < served < 5000
        assert header(headers, PARTIAL) is not None
    status, headers, body = depth(gunicorn.url, "BNBBTC")  # Binance's default: 100
    assert status == 200 and len(body["bids"]) == len(body["asks"]) == 100
    assert header(headers, PARTIAL) is None
    judge(sim, "BNBBTC", 100, headers, body)


@pytest.fixture
def deep_stack(
    sim_factory: SimFactory, messenger_factory: MessengerFactory, gunicorn: Gunicorn, real_redis: Any
) -> tuple[str, Simulator]:
    sim = sim_factory("--rate", "20", "--book-levels", "3000")
    messenger_factory(sim, "btcusdt", DEPTH_SNAPSHOT_LIMIT=5000)
    symbol_list_loaded(real_redis)
    return gunicorn.url, sim


def eventually(call: Callable[[], Any], what: str) -> Any:
    """A client's answer once the stack has it (the first request starts the stream and the book)."""
    answers: list[Any] = []

    def answered() -> bool:
        try:
            answers.append(call())
        except Exception as exc:  # each client raises its own kind on a 503
            answers.append(exc)
            return False
        return True

    try:
        wait_until(answered, 20, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: the last answer was {answers[-1] if answers else None!r}") from None
    return answers[-1]


def test_ccxt_fetch_order_book_at_every_common_limit(deep_stack: tuple[str, Simulator]) -> None:
    url, sim = deep_stack
    exchange = ccxt.binance({"enableRateLimit": False, "options": {"fetchMarkets": {"types": ["spot"]}}})
    exchange.urls["api"]["public"] = f"{url}/api/v3"
    for limit in (5, 50, 100, 500, 1000):

        def fetch(limit: int = limit) -> Any:
            return exchange.fetch_order_book("ETH/BTC", limit)

        book = eventually(fetch, f"ccxt {limit}")
        assert len(book["bids"]) == len(book["asks"]) == limit
        theirs = exchange_book(sim, "ETHBTC", book["nonce"], limit)
        assert [[float(p), float(q)] for p, q in theirs["bids"]] == book["bids"]
        assert [[float(p), float(q)] for p, q in theirs["asks"]] == book["asks"]
    default = exchange.fetch_order_book("ETH/BTC")  # no limit: Binance's default, 100
    assert len(default["bids"]) == 100


def test_python_binance_get_order_book_default_and_1000(deep_stack: tuple[str, Simulator]) -> None:
    url, sim = deep_stack
    client = Client(ping=False)
    client.API_URL = f"{url}/api"
    book = eventually(lambda: client.get_order_book(symbol="LTCBTC"), "python-binance default")
    assert len(book["bids"]) == len(book["asks"]) == 100
    assert book == {
        "lastUpdateId": book["lastUpdateId"],
        **exchange_book(sim, "LTCBTC", book["lastUpdateId"], 100),
    }
    deep = eventually(lambda: client.get_order_book(symbol="LTCBTC", limit=1000), "python-binance 1000")
    assert len(deep["bids"]) == len(deep["asks"]) == 1000
    theirs = exchange_book(sim, "LTCBTC", deep["lastUpdateId"], 1000)
    assert (deep["bids"], deep["asks"]) == (theirs["bids"], theirs["asks"])
