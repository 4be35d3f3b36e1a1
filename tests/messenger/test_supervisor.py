"""Reconnects, deterministically: the supervisor's clock is the test's, and the exchange is played here.

Each connection backs off on its own (a 1008 or a drop on one never delays replacing another);
only what Binance counts per IP (a 429/418 with its Retry-After, the connection budget) holds
back every new connection; and "reconnecting in X s" is when the reconnect happens.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from contract.settings import Settings
from messenger import supervisor as supervisor_module
from messenger.binance import BOOK_TICKER
from messenger.book import Book
from messenger.connection import CLOSED, CONNECTING, OPEN, Connection
from messenger.routes import route_for
from messenger.supervisor import Supervisor

SYMBOLS = ("BTCUSDT", "ETHBTC", "BNBBTC", "LTCBTC")
MIN_S, MAX_S = 0.5, 30.0
TICK_S = 0.05  # the messenger's loop


class Rest:
    """What the supervisor reads of the REST client: until when Binance said to wait."""

    ip_wait_until = 0.0


class Seeder:
    """Takes seed requests and does nothing with them."""

    def __init__(self) -> None:
        self.rest = Rest()

    def request(self, conn: Any, routes: Any) -> None:
        pass


class Exchange:
    """Plays Binance: connections open at the next tick unless a handshake is to be refused."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.made: list[FakeConnection] = []
        self.refuse: tuple[int, str | None] | None = None  # (HTTP status, Retry-After) of handshakes


EXCHANGE = Exchange()  # the one the running test plays (the fixture makes a new one)


class FakeConnection(Connection):
    """A connection without a socket or a thread: the test says when it opens and how it ends."""

    def start(self) -> None:
        self.created_at = self.last_heard = EXCHANGE.now
        EXCHANGE.made.append(self)
        if EXCHANGE.refuse is not None:
            self.refused_status, self.retry_after = EXCHANGE.refuse
            self.close_reason = f"connect refused: HTTP {self.refused_status}"
            self.state = CLOSED

    def close(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        self.state = CLOSED

    def abort(self, reason: str) -> None:
        self.close(reason)

    def open(self, now: float) -> None:
        self.state = OPEN
        self.opened_at = now
        self._confirmed(list(self.streams), now)
        self.last_heard = now + 0.001  # heard from after subscribing: healthy

    def ended_by_server(self, code: int, reason: str) -> None:
        self.close_code = code
        self.close_reason = f"closed by server ({code} {reason})"
        self.state = CLOSED

    def dropped(self) -> None:
        self.close_reason = "dropped: Connection to remote host was lost."
        self.state = CLOSED


class Harness:
    """A supervisor carrying one symbol per connection, and a clock to drive it with."""

    def __init__(self) -> None:
        settings = Settings.from_env(
            {},
            reconnect_min_ms=int(MIN_S * 1000),
            reconnect_max_ms=int(MAX_S * 1000),
            max_streams_per_connection=1,
        )
        self.seeder = Seeder()
        # rand() = 1: every delay is its full value, with no jitter.
        self.sup = Supervisor(settings, Book(5.0), self.seeder, rand=lambda: 1.0)  # type: ignore[arg-type]
        self.routes = {s: route_for(s, BOOK_TICKER) for s in SYMBOLS}
        self.sup.want(self.routes.values())

    @property
    def now(self) -> float:
        return EXCHANGE.now

    def run_until(self, until: float) -> None:
        """Tick as the messenger does; connections open when asked, and open ones are heard from."""
        while EXCHANGE.now < until - 1e-9:
            EXCHANGE.now = min(until, EXCHANGE.now + TICK_S)
            for conn in EXCHANGE.made:
                if conn.state == CONNECTING:
                    conn.open(EXCHANGE.now)
                elif conn.state == OPEN:
                    conn.last_heard = EXCHANGE.now
            self.sup.tick(EXCHANGE.now)

    def run_for(self, seconds: float) -> None:
        self.run_until(EXCHANGE.now + seconds)

    def carrier(self, symbol: str) -> FakeConnection | None:
        """The open connection carrying a symbol's stream, if any."""
        stream = self.routes[symbol].stream
        return next((c for c in EXCHANGE.made if c.state == OPEN and stream in c.streams), None)

    def made_for(self, symbol: str, after: float) -> list[FakeConnection]:
        """Connections made for a symbol after a time."""
        stream = self.routes[symbol].stream
        return [c for c in EXCHANGE.made if stream in c.streams and c.created_at > after]

    def opened_for(self, symbol: str, after: float) -> list[float]:
        """When connections for a symbol were made, after a time."""
        return [c.created_at for c in self.made_for(symbol, after)]


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setattr(supervisor_module, "Connection", FakeConnection)
    monkeypatch.setattr(__import__(__name__, fromlist=["EXCHANGE"]), "EXCHANGE", Exchange())
    box = Harness()
    box.run_for(2 * TICK_S)
    assert all(box.carrier(s) for s in SYMBOLS)
    return box


def logged_delay(caplog: pytest.LogCaptureFixture, conn: Connection) -> float:
    """The delay the last "reconnecting in X s" line about ``conn`` announced."""
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{conn}: ")]
    delays = [re.search(r"reconnecting in ([\d.]+) s", line) for line in lines]
    found = [float(m[1]) for m in delays if m]
    assert found, lines
    return found[-1]


def test_a_1008_on_one_connection_never_delays_replacing_another(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    limited, dropped = harness.carrier("BTCUSDT"), harness.carrier("ETHBTC")
    assert limited is not None and dropped is not None
    others = [harness.carrier(s) for s in ("BNBBTC", "LTCBTC")]
    limited.ended_by_server(1008, "Too many requests")
    harness.run_for(1.0)
    limited_at = harness.now - 1.0
    assert logged_delay(caplog, limited) == pytest.approx(MAX_S, abs=0.06)

    harness.run_for(5.0)  # 6 s after the 1008, another connection drops
    dropped.dropped()
    dropped_at = harness.now
    harness.run_for(2.0)
    delay = logged_delay(caplog, dropped)
    assert delay == pytest.approx(MIN_S, abs=0.06)  # its own first backoff, nothing else
    [reopened] = harness.opened_for("ETHBTC", dropped_at)
    assert delay - 0.01 <= reopened - dropped_at <= delay + 2 * TICK_S  # when the log said
    assert harness.carrier("ETHBTC") is not None
    assert [harness.carrier(s) for s in ("BNBBTC", "LTCBTC")] == others  # never touched

    # The limited connection alone waits the longest, and then comes back.
    harness.run_until(limited_at + MAX_S - 0.5)
    assert harness.opened_for("BTCUSDT", limited_at) == []
    harness.run_until(limited_at + MAX_S + 0.5)
    assert harness.carrier("BTCUSDT") is not None


def test_each_connection_doubles_its_own_backoff(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    flaky, steady = harness.carrier("BTCUSDT"), harness.carrier("ETHBTC")
    assert flaky is not None and steady is not None
    EXCHANGE.refuse = (503, None)  # every reconnect fails: the delays double
    flaky.dropped()
    harness.run_for(0.5 + 1 + 2 + 4 - 0.2)
    EXCHANGE.refuse = None
    lines = [r.getMessage() for r in caplog.records if "btcusdt" in str(getattr(r, "args", ""))]
    stream = harness.routes["BTCUSDT"].stream
    tried = [c for c in EXCHANGE.made if stream in c.streams]
    delays = [logged_delay(caplog, c) for c in tried[:4]]
    assert delays == pytest.approx([0.5, 1.0, 2.0, 4.0], abs=0.06), lines
    steady.dropped()  # another connection starts from the first step
    harness.run_for(TICK_S)
    assert logged_delay(caplog, steady) == pytest.approx(MIN_S, abs=0.06)


@pytest.mark.parametrize("status", [429, 418])
def test_a_handshake_refused_with_429_or_418_holds_every_new_connection_for_its_retry_after(
    harness: Harness, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    caplog.set_level(logging.INFO)
    first, second = harness.carrier("BTCUSDT"), harness.carrier("ETHBTC")
    assert first is not None and second is not None
    EXCHANGE.refuse = (status, "12")
    first.dropped()
    harness.run_for(MIN_S + 4 * TICK_S)  # its reconnect is refused, and that is noticed
    [refused] = [c for c in EXCHANGE.made if c.refused_status == status]
    refused_at = refused.created_at
    EXCHANGE.refuse = None
    second.dropped()  # another connection: it waits for the IP too, and its log says so
    harness.run_for(TICK_S)
    message = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{second}: ")][-1]
    assert re.search(r"reconnecting in 1[12]\.\d s \(waiting for Binance's Retry-After\)", message), message
    announced = logged_delay(caplog, second)
    harness.sup.want([route_for("XRPBTC", BOOK_TICKER)])  # new streams wait as well
    harness.run_until(refused_at + 12.0 - TICK_S)
    assert [c for c in EXCHANGE.made if c.created_at > refused_at] == []
    harness.run_until(refused_at + 12.0 + MAX_S)
    late = sorted(c.created_at for c in EXCHANGE.made if c.created_at > refused_at)
    assert late and late[0] == pytest.approx(refused_at + 12.0, abs=2 * TICK_S)
    assert late[0] - (refused_at + MIN_S + TICK_S) <= announced + TICK_S
    assert all(harness.carrier(s) for s in SYMBOLS)


def test_a_rest_429_holds_new_connections_for_its_retry_after(harness: Harness) -> None:
    conn = harness.carrier("LTCBTC")
    assert conn is not None
    harness.seeder.rest.ip_wait_until = harness.now + 5.0
    conn.dropped()
    dropped_at = harness.now
    harness.run_for(5.0 - TICK_S)
    assert harness.opened_for("LTCBTC", dropped_at) == []
    harness.run_for(2 * TICK_S + 0.01)
    assert harness.carrier("LTCBTC") is not None


def test_an_ip_wide_wait_that_comes_after_a_reconnect_was_announced_is_logged_when_it_holds_it(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    conn = harness.carrier("LTCBTC")
    assert conn is not None
    conn.dropped()
    harness.run_for(TICK_S)
    assert logged_delay(caplog, conn) == pytest.approx(MIN_S, abs=0.06)
    harness.seeder.rest.ip_wait_until = harness.now + 5.0  # a REST call got a 429 meanwhile
    harness.run_for(1.0)
    held = [r.getMessage() for r in caplog.records if "reconnect(s) due now wait" in r.getMessage()]
    assert len(held) == 1 and re.fullmatch(
        r"conn: 1 reconnect\(s\) due now wait 4\.\d s more for Binance's Retry-After on REST", held[0]
    ), held
    harness.run_for(4.5)
    assert harness.carrier("LTCBTC") is not None


def test_the_connection_budget_stays_ip_wide(harness: Harness) -> None:
    budget = harness.sup.admission.budget
    budget.limit = len(budget._attempts)  # spent: every connection so far was an attempt
    conn = harness.carrier("BNBBTC")
    assert conn is not None
    conn.dropped()
    dropped_at = harness.now
    harness.run_for(3.0)
    assert harness.opened_for("BNBBTC", dropped_at) == []
    budget.limit += 1
    harness.run_for(1.0 + TICK_S)
    assert harness.carrier("BNBBTC") is not None


def test_a_failed_replacement_is_retried_on_its_own_backoff_while_others_reconnect_at_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    old, other = harness.carrier("BTCUSDT"), harness.carrier("ETHBTC")
    assert old is not None and other is not None
    old.shutdown_announced = True
    EXCHANGE.refuse = (503, None)  # not an IP-wide answer: this successor alone fails
    harness.run_for(TICK_S)
    EXCHANGE.refuse = None
    [successor] = [c for c in EXCHANGE.made if c.refused_status == 503]
    failed_at = harness.now
    assert old.state == OPEN  # make before break: the old one carries on
    other.dropped()
    harness.run_for(MIN_S + 3 * TICK_S)  # noticed at the next tick, open the tick after its backoff
    assert harness.carrier("ETHBTC") is not None
    message = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{successor}: ")][-1]
    retry = float(re.search(r"retrying in ([\d.]+) s", message)[1])  # type: ignore[index]
    harness.run_for(retry + 1.0)
    replacements = [
        c for c in EXCHANGE.made if "btcusdt@bookTicker" in c.streams and c.created_at > failed_at
    ]
    # Noticed at the next tick, retried at the first tick its backoff allows.
    assert replacements and replacements[0].created_at - failed_at <= retry + 3 * TICK_S
    assert replacements[0].state == OPEN


def test_a_successor_open_before_its_streams_are_confirmed_is_not_caught_up(harness: Harness) -> None:
    """The reader thread says a successor is open, then tells the book its URL streams are
    confirmed; a tick in between saw nothing pending and closed the old connection, and a quiet
    symbol had no voucher until a REST seed came (a 500 in CI, on the 24 h cut)."""
    old = harness.carrier("BTCUSDT")
    assert old is not None
    key = harness.routes["BTCUSDT"].key
    order, fields = BOOK_TICKER.parse(
        {"u": 7, "s": "BTCUSDT", "b": "1.0", "B": "1.0", "a": "2.0", "A": "1.0"}, "BTCUSDT"
    )
    assert old.book.on_frame(old, key, order, fields, harness.now)  # the old one vouches for it
    old.shutdown_announced = True
    EXCHANGE.now += TICK_S
    harness.sup.tick(EXCHANGE.now)
    [new] = [c for c in EXCHANGE.made if c.state == CONNECTING]
    new.state, new.opened_at = OPEN, harness.now  # _opened has set its state, not yet confirmed
    for _ in range(3):
        EXCHANGE.now += TICK_S
        old.last_heard = new.last_heard = EXCHANGE.now
        harness.sup.tick(EXCHANGE.now)
        assert old.state == OPEN, old.close_reason
    new._confirmed(list(new.streams), harness.now)  # what _opened does next
    for _ in range(2):  # a tick moves the vouching (the old one heard from since), the next closes it
        EXCHANGE.now += TICK_S
        old.last_heard = new.last_heard = EXCHANGE.now
        harness.sup.tick(EXCHANGE.now)
    assert (old.state, old.close_reason) == (CLOSED, "replaced")
