"""Diff depth, deep snapshots and the book oracle, over a real WebSocket and HTTP from the simulator.

A client that keeps a local book the way Binance documents it ("How to manage a local order book
correctly": buffer the events, fetch a snapshot, drop what it holds, apply the rest) must end up
with exactly the book the simulator had at every event's ``u`` (``GET /_sim/book?at=u``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
import websocket

from tests.processes import Simulator, http, wait_until

SimFactory = Callable[..., Simulator]
Event = dict[str, Any]


@pytest.fixture
def connect() -> Iterator[Callable[[Simulator, str], websocket.WebSocket]]:
    opened: list[websocket.WebSocket] = []

    def make(sim: Simulator, path: str) -> websocket.WebSocket:
        ws = websocket.WebSocket(skip_utf8_validation=True)
        opened.append(ws)
        ws.connect(sim.ws_url + path, timeout=5)
        return ws

    yield make
    for ws in opened:
        ws.close(timeout=0.1)
        ws.shutdown()


def next_event(ws: websocket.WebSocket, stream_suffix: str = "@depth@100ms") -> Event:
    """The next frame of a stream (raw or combined), control frames answered by the library."""
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue
        msg = orjson.loads(frame.data)
        if "stream" not in msg:
            return dict(msg)
        if msg["stream"].endswith(stream_suffix):
            return dict(msg["data"])


def events_until(ws: websocket.WebSocket, last_u: int, stream_suffix: str = "@depth@100ms") -> list[Event]:
    """Events until one reaches update id ``last_u``."""
    events = [next_event(ws, stream_suffix)]
    while events[-1]["u"] < last_u:
        events.append(next_event(ws, stream_suffix))
    return events


def rest(sim: Simulator, path: str) -> tuple[int, dict[str, str], Any]:
    return http("GET", f"{sim.rest_url}{path}", timeout_s=30)


def oracle(sim: Simulator, symbol: str, at: int, limit: int | None = None) -> Any:
    query = f"symbol={symbol}&at={at}" + ("" if limit is None else f"&limit={limit}")
    status, _, doc = rest(sim, f"/_sim/book?{query}")
    assert status == 200, doc
    return doc


class LocalBook:
    """A client's book: a snapshot, then diff events applied as Binance's procedure says."""

    def __init__(self, snapshot: Any) -> None:
        self.last = snapshot["lastUpdateId"]
        self.sides = [dict(map(tuple, snapshot["bids"])), dict(map(tuple, snapshot["asks"]))]
        self.applied = 0  # update ids applied

    def apply(self, event: Event) -> bool:
        """Apply one event; False if it was already in the book. A gap fails the test."""
        if event["u"] <= self.last:
            return False
        assert event["U"] <= self.last + 1, f"gap: U {event['U']} after {self.last}"
        for side, levels in zip(self.sides, (event["b"], event["a"]), strict=True):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.applied += event["u"] - self.last
        self.last = event["u"]
        return True

    def top(self, limit: int | None = None, within: tuple[str, str] | None = None) -> list[list[list[str]]]:
        """Both sides best first (only prices at or better than ``within``'s, if given)."""
        bids = sorted(self.sides[0].items(), key=lambda level: Decimal(level[0]), reverse=True)
        asks = sorted(self.sides[1].items(), key=lambda level: Decimal(level[0]))
        if within is not None:
            bids = [b for b in bids if Decimal(b[0]) >= Decimal(within[0])]
            asks = [a for a in asks if Decimal(a[0]) <= Decimal(within[1])]
        return [[list(level) for level in side[:limit]] for side in (bids, asks)]


def cut(doc: Any, within: tuple[str, str]) -> list[list[list[str]]]:
    """An oracle book's levels at or better than ``within``'s prices."""
    return [
        [b for b in doc["bids"] if Decimal(b[0]) >= Decimal(within[0])],
        [a for a in doc["asks"] if Decimal(a[0]) <= Decimal(within[1])],
    ]


@pytest.mark.parametrize(("book_levels", "snapshot_limit"), [(3000, 5000), (6000, 1000)])
def test_a_local_book_from_diff_events_is_the_exchanges_at_every_update_id(
    sim_factory: SimFactory, connect: Any, book_levels: int, snapshot_limit: int
) -> None:
    """Thousands of changes within seconds; with a snapshot deeper than the book, the whole book
    is exact; with a shallower one, every level as far as the snapshot reached (Binance's note:
    deeper levels that never change are never sent)."""
    sim = sim_factory("--rate", "50", "--book-rate", "500", "--book-levels", str(book_levels))
    ws = connect(sim, "/ws/btcusdt@depth@100ms")
    buffered = [next_event(ws)]
    status, _, snapshot = rest(sim, f"/api/v3/depth?symbol=BTCUSDT&limit={snapshot_limit}")
    assert status == 200 and len(snapshot["bids"]) == min(book_levels, snapshot_limit)
    assert buffered[0]["U"] <= snapshot["lastUpdateId"] + 1  # else Binance says: fetch again
    local = LocalBook(snapshot)
    within = (snapshot["bids"][-1][0], snapshot["asks"][-1][0])
    exact = book_levels <= snapshot_limit
    checked = 0
    started = time.monotonic()
    while local.applied < 3000 or checked < 10:
        event = buffered.pop(0) if buffered else next_event(ws)
        if not local.apply(event):
            continue
        truth = oracle(sim, "BTCUSDT", event["u"])
        if exact:
            assert local.top() == [truth["bids"], truth["asks"]], event["u"]
        else:
            assert local.top(within=within) == cut(truth, within), event["u"]
            assert local.top(5000)[0][:100] == truth["bids"][:100]  # the top is always exact here
        checked += 1
    assert time.monotonic() - started < 30


def collect(ws: websocket.WebSocket, last_u: int) -> dict[str, list[Event]]:
    """A combined connection's events per stream, until every stream's reach ``last_u``."""
    streams: dict[str, list[Event]] = {}
    while len(streams) < 2 or any(events[-1]["u"] < last_u for events in streams.values()):
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            msg = orjson.loads(frame.data)
            streams.setdefault(msg["stream"], []).append(msg["data"])
    return streams


def test_update_ids_are_consecutive_and_the_same_for_every_connection(
    sim_factory: SimFactory, connect: Any
) -> None:
    sim = sim_factory("--rate", "20", "--book-rate", "400")
    raw = connect(sim, "/ws/ethbtc@depth@100ms")
    combined = connect(sim, "/stream?streams=ethbtc@depth@100ms/ethbtc@depth")
    first = next_event(raw)
    events = events_until(raw, first["u"] + 1000)
    streams = collect(combined, events[-1]["u"])
    fast, slow = streams["ethbtc@depth@100ms"], streams["ethbtc@depth"]  # 100 ms and 1 s apart
    for series in ([first, *events], fast, slow):
        for before, after in itertools.pairwise(series):
            assert after["U"] == before["u"] + 1
            assert after["u"] >= after["U"]
    assert len(slow) >= 2 and len(fast) > 4 * len(slow)
    by_first = {e["U"]: e for e in events}
    assert all(by_first[e["U"]]["u"] == e["u"] for e in fast if e["U"] in by_first)
    event = events[-1]
    assert set(event) == {"e", "E", "s", "U", "u", "b", "a"} and (event["e"], event["s"]) == (
        "depthUpdate",
        "ETHBTC",
    )
    assert abs(event["E"] - time.time() * 1000) < 5000
    levels = event["b"] + event["a"]
    assert levels and all(len(p.split(".")[1]) == len(q.split(".")[1]) == 8 for p, q in levels)
    bids = [Decimal(p) for p, _ in event["b"]]
    assert bids == sorted(bids, reverse=True)


def test_no_changes_no_events(sim_factory: SimFactory, connect: Any) -> None:
    """Binance sends nothing for an interval without changes."""
    sim = sim_factory("--rate", "20", "--book-rate", "200")
    ws = connect(sim, "/ws/bnbbtc@depth@100ms")
    next_event(ws)
    sim.market(rate=0, book_rate=0)
    ws.settimeout(0.5)
    late, stopped, silent = 0, time.monotonic(), False
    while not silent and time.monotonic() - stopped < 3:  # whatever was already on its way, then none
        try:
            next_event(ws)
            late += 1
        except websocket.WebSocketTimeoutException:
            silent = True
    assert silent and late <= 2


def session_of(sim: Simulator, path: str) -> int:
    [session] = [s for s in sim.sessions() if s["path"] == path]
    return int(session["id"])


def test_drop_diff_makes_one_gap_on_one_connection(sim_factory: SimFactory, connect: Any) -> None:
    sim = sim_factory("--rate", "20", "--book-rate", "200")
    victim = connect(sim, "/ws/btcusdt@depth@100ms")
    witness = connect(sim, "/stream?streams=btcusdt@depth@100ms")
    start = next_event(victim)
    victim_id = session_of(sim, "/ws/btcusdt@depth@100ms")
    armed = sim.fault("drop_diff", symbol="BTCUSDT", session=victim_id)
    assert armed["sessions"] == [victim_id]
    got = [start, *events_until(victim, start["u"] + 500)]
    gaps = [(a, b) for a, b in itertools.pairwise(got) if b["U"] != a["u"] + 1]
    assert len(gaps) == 1
    before, after = gaps[0]
    seen = events_until(witness, after["u"])
    [missing] = [e for e in seen if before["u"] < e["U"] and e["u"] < after["U"]]
    assert (missing["U"], missing["u"]) == (before["u"] + 1, after["U"] - 1)
    assert sim.state()["depth_faults"]["drop_diff"] == 1
    assert all(s["diff_faults"] == {} for s in sim.sessions())  # done: nothing armed any more


def test_swap_diff_sends_two_events_in_the_wrong_order(sim_factory: SimFactory, connect: Any) -> None:
    sim = sim_factory("--rate", "20", "--book-rate", "200")
    ws = connect(sim, "/stream?streams=btcusdt@depth@100ms")
    start = next_event(ws)
    sim.fault("swap_diff", symbol="BTCUSDT")
    got = [start, *events_until(ws, start["u"] + 500)]
    backwards = [i for i in range(1, len(got)) if got[i]["U"] < got[i - 1]["U"]]
    assert len(backwards) == 1
    i = backwards[0]
    assert got[i]["u"] + 1 == got[i - 1]["U"]  # the later event came first
    assert sorted(got, key=lambda e: e["U"]) == [*got[: i - 1], got[i], got[i - 1], *got[i + 1 :]]
    wait_until(lambda: sim.state()["depth_faults"]["swap_diff"] == 1, 2)


def test_depth_delay_holds_snapshots_back(sim_factory: SimFactory) -> None:
    sim = sim_factory("--rate", "20")
    sim.control("POST", "depth", {"symbol": "BTCUSDT"})
    sim.fault("depth_delay", delay_ms=800, count=2)
    for _ in range(2):
        started = time.monotonic()
        assert rest(sim, "/api/v3/depth?symbol=BTCUSDT")[0] == 200
        assert time.monotonic() - started >= 0.8
    started = time.monotonic()
    rest(sim, "/api/v3/depth?symbol=BTCUSDT")
    assert time.monotonic() - started < 0.5
    sim.fault("depth_delay", delay_ms=300, duration_s=1.5)
    delayed = 0
    started = time.monotonic()
    while time.monotonic() - started < 5:  # until the first answer on time
        asked = time.monotonic()
        rest(sim, "/api/v3/depth?symbol=BTCUSDT&limit=5")
        if time.monotonic() - asked < 0.3:
            break
        delayed += 1
    assert 1.5 <= time.monotonic() - started < 2.5
    assert 1 <= delayed <= 6  # each delayed answer took >= 0.3 s; fewer fit on a loaded machine
    assert sim.state()["depth_faults"]["depth_delay"] == 2 + delayed


def test_a_stale_snapshot_is_the_book_as_it_was(sim_factory: SimFactory) -> None:
    """A snapshot older than the events a client buffered: Binance's procedure must fetch again."""
    sim = sim_factory("--rate", "20")
    made = sim.control("POST", "depth", {"symbol": "BTCUSDT", "levels": 3000})  # 6,000 updates
    sim.fault("depth_delay", delay_ms=0, stale_updates=5000)
    _, _, stale = rest(sim, "/api/v3/depth?symbol=BTCUSDT&limit=1000")
    assert stale["lastUpdateId"] == made["lastUpdateId"] - 5000
    assert stale == oracle(sim, "BTCUSDT", stale["lastUpdateId"], 1000)
    assert (
        len(stale["bids"]) == 1000
        and rest(sim, "/api/v3/depth?symbol=BTCUSDT")[2]["lastUpdateId"] == made["lastUpdateId"]
    )


WEIGHTS = [(None, 5, 100), (1, 5, 1), (100, 5, 100), (101, 25, 101), (500, 25, 500), (501, 50, 501),
           (1000, 50, 1000), (1001, 250, 1001), (5000, 250, 5000), (6000, 250, 5000)]  # fmt: skip


def test_depth_snapshots_weigh_as_binances(sim: Simulator) -> None:
    """Binance's weights by limit (1-100: 5, 101-500: 25, 501-1000: 50, 1001-5000: 250), its
    default of 100 levels, and a limit above 5,000 cut to 5,000."""
    sim.control("POST", "depth", {"symbol": "ETHBTC"})
    used = int(rest(sim, "/api/v3/ping")[1]["X-MBX-USED-WEIGHT-1M"])  # the pings of its start too
    for limit, weight, levels in WEIGHTS:
        query = "symbol=ETHBTC" + ("" if limit is None else f"&limit={limit}")
        status, headers, doc = rest(sim, f"/api/v3/depth?{query}")
        used += weight
        assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) == used, query
        entry = sim.state()["rest_requests"][-1]
        assert (entry["path"], entry["weight"]) == (f"/api/v3/depth?{query}", weight)
        assert len(doc["bids"]) == len(doc["asks"]) == levels
        assert doc == oracle(sim, "ETHBTC", doc["lastUpdateId"], levels)
        bids, asks = ([Decimal(p) for p, _ in side] for side in (doc["bids"], doc["asks"]))
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    total = sum(weight for _, weight, _ in WEIGHTS)
    assert sim.state()["rest_totals"]["/api/v3/depth"] == {"calls": len(WEIGHTS), "weight": total}


def test_bad_depth_limits_are_refused(sim: Simulator) -> None:
    for limit in ("0", "-5", "abc"):
        status, _, doc = rest(sim, f"/api/v3/depth?symbol=ETHBTC&limit={limit}")
        assert (status, doc["code"]) == (400, -1130)
    assert rest(sim, "/api/v3/depth?symbol=NOPE")[2] == {"code": -1121, "msg": "Invalid symbol."}


def test_full_books_are_made_only_when_asked_for(sim: Simulator, connect: Any) -> None:
    """A symbol whose deep book nobody asks for costs no full book: bookTicker, partial depth and
    snapshots of up to 20 levels come from its top of book."""
    ws = connect(sim, "/stream?streams=btcusdt@bookTicker/btcusdt@depth5@100ms/ethbtc@depth20")
    next_event(ws, "@depth5@100ms")
    assert rest(sim, "/api/v3/depth?symbol=BTCUSDT&limit=20")[0] == 200
    assert sim.state()["order_books"] == {}
    assert rest(sim, "/api/v3/depth?symbol=BTCUSDT&limit=21")[0] == 200
    connect(sim, "/ws/bnbbtc@depth")
    books = wait_until(lambda: sim.state()["order_books"], 2)
    assert sorted(books) == ["BNBBTC", "BTCUSDT"] and books["BTCUSDT"]["levels"] == [6000, 6000]


def test_top_of_book_and_partial_depth_are_the_full_books(sim_factory: SimFactory, connect: Any) -> None:
    """With a full book, bookTicker's u and depth5's lastUpdateId are its update ids, and what
    they say is the book at that id."""
    sim = sim_factory("--rate", "50", "--book-rate", "100")
    ws = connect(sim, "/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@depth5@100ms")
    next_event(ws)
    tickers = [next_event(ws, "@bookTicker") for _ in range(20)]
    for ticker in tickers[-5:]:
        top = oracle(sim, "BTCUSDT", ticker["u"], 1)
        assert [top["bids"][0], top["asks"][0]] == [[ticker["b"], ticker["B"]], [ticker["a"], ticker["A"]]]
    for _ in range(3):
        partial = next_event(ws, "@depth5@100ms")
        assert partial == oracle(sim, "BTCUSDT", partial["lastUpdateId"], 5)
    bid = f"{Decimal(tickers[-1]['b']) + Decimal('0.00000001'):.8f}"  # a better bid, inside the spread
    sent = sim.set_book("BTCUSDT", bid, "2.00000000", tickers[-1]["a"], "3.00000000")
    top = oracle(sim, "BTCUSDT", sent["u"], 1)
    assert [top["bids"][0], top["asks"][0]] == [[bid, "2.00000000"], [tickers[-1]["a"], "3.00000000"]]


def test_a_thin_book_and_the_oracles_limits(sim_factory: SimFactory) -> None:
    sim = sim_factory("--rate", "20", "--book-journal", "1000")
    made = sim.control("POST", "depth", {"symbol": "ETHBTC", "levels": 300})
    assert made["levels"] == [300, 300]
    _, _, doc = rest(sim, "/api/v3/depth?symbol=ETHBTC&limit=1000")
    assert len(doc["bids"]) == len(doc["asks"]) == 300
    now = doc["lastUpdateId"]
    assert rest(sim, f"/_sim/book?symbol=ETHBTC&at={now + 10**6}")[0] == 404
    assert rest(sim, "/_sim/book?symbol=LTCBTC")[0] == 404  # no full book
    assert rest(sim, f"/_sim/book?symbol=ETHBTC&at={made['oldest'] - 1}")[0] == 410  # beyond the journal
    status, _, whole = rest(sim, f"/_sim/book?symbol=ETHBTC&at={now}")
    assert status == 200 and whole == doc
