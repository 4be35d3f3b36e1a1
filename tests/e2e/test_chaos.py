"""Chaos: a minute of random faults against the whole stack, every answer judged by an oracle.

The simulator runs with ``--record``: it keeps every value it publishes (stream frames and the
REST answers the messenger seeds from), with when it was published and when it stopped being the
exchange's current value (see ``simulator/record.py``). Meanwhile clients poll pinned and on-demand
streams of several kinds every ~20 ms, and the test injects, in an order drawn from a logged seed:
drops, stalls, a 1008 close, 24 h cuts, ``serverShutdown``, SIGKILL of the messenger (restarted),
a Redis restart, bursts of about a thousand on-demand streams (waves of a few hundred asked for
at once, which go idle together) asked for again once idle, and a demand flood over the cap.

The bound. The README's freshness table gives, per fault, the longest a value that may no longer
be right can be served: ``LIVENESS_TIMEOUT_MS`` (and a 50 ms check) for a stalled connection,
``SNAPSHOT_TTL_MS`` for a killed messenger, milliseconds for a drop, none for the others, and
``LIVENESS_TIMEOUT_MS + SNAPSHOT_TTL_MS`` for the longest row (a messenger whose loop no longer
withdraws values: they expire a TTL after the writer stops renewing them). With the settings here
(2,000 and 1,000 ms) nothing may be served more than 3 s after it was superseded. A stream whose
last subscriber left counts its last value as superseded then (see ``simulator/record.py``); the
messenger withdraws a value before it unsubscribes, so that costs a correct messenger nothing.
``SLACK_MS`` adds one second for what one machine adds (tests/oracle.py, which also judges).
A 200 whose value was superseded longer ago than ``BOUND_MS`` fails the test; so does a 200
whose value the exchange never published.

Also asserted: no limit of Binance's was broken (the simulator's per-connection violations,
refused connections, REST 429s); pinned symbols answer 200 through bursts and floods; one 1008
does not hold back the reconnect of another connection (the probe closes one connection with 1008,
then drops the one carrying the pinned streams); with a demand cap in the settings
(``DEMAND_MAX_STREAMS``), the streams subscribed never exceed it.

``CHAOS_SEED`` replays a schedule (the processes' timing still varies); ``CHAOS_DURATION_S``
lengthens or shortens the fault phase (default 45 s; every fault is injected once however short);
``CHAOS_FAULTS=burst,1008`` injects only those. Run with ``-s`` to see the report.
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract.settings import Settings
from simulator import record
from tests.conftest import Started
from tests.machine_lock import holding_the_machine
from tests.oracle import SLACK_MS, Judgement, Published, Stream, Value, served_value, stream_name
from tests.processes import Gunicorn, Messenger, RedisServer, Simulator, http, messenger_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(420)]

SETTINGS: dict[str, Any] = {
    "SNAPSHOT_TTL_MS": 1000,
    "LIVENESS_TIMEOUT_MS": 2000,
    "DEMAND_IDLE_S": 2,
    "DEMAND_WAIT_MS": 250,  # asking again for a stream gone idle answers at once, or 503 soon
    "RECONNECT_MIN_MS": 100,
    "RECONNECT_MAX_MS": 10_000,  # also the wait after a 1008: long enough to see who else it holds back
    "CONNECTION_MAX_AGE_S": 40,  # make before break a few times in the run
    "STATS_INTERVAL_S": 5,
    # Bursts come from one client (this test): let them through the per-client rate, so that
    # hundreds of streams really start and go idle; the flood still meets the cap on everyone.
    "DEMAND_MAX_STREAMS": 1000,
    "DEMAND_CLIENT_STREAMS_PER_S": 1000,
    "DEMAND_CLIENT_BURST": 2000,
}
BOUND_MS = SETTINGS["LIVENESS_TIMEOUT_MS"] + SETTINGS["SNAPSHOT_TTL_MS"] + SLACK_MS
# A drop is a reconnect with the shortest backoff and a resubscribe: well within half the wait
# a 1008 imposes on its own connection.
PROBE_RECOVERY_MS = SETTINGS["RECONNECT_MAX_MS"] // 2
POLL_INTERVAL_S = 0.02
POLLERS = 4
ASKERS = 16  # requests in flight at once for bursts, floods and revisits
SETTLE_TIMEOUT_S = 25.0
# Burst streams are asked for once, then again when they have surely gone idle and any value
# still served for them would be past the bound.
REVISIT_AFTER_S = SETTINGS["DEMAND_IDLE_S"] + BOUND_MS / 1000 + 4
REVISIT_EACH_KINDS = ("bookTicker", "depth5")  # the kinds with the most frames

PINNED = ("BTCUSDT", "ETHBTC")
PINNED_KINDS = ("bookTicker", "trade", "aggTrade", "depth5", "kline_1m", "ticker", "miniTicker", "avgPrice")
STEADY_COUNT = 4  # on-demand symbols polled all along
STEADY_KINDS = ("bookTicker", "aggTrade", "depth10", "kline_1s", "ticker")
# A burst: 200 to 250 symbols x 5 kinds, in 5 waves of a few hundred streams asked for at once.
BURST_SYMBOLS = 250
BURST_WAVES = 5
BURST_WAVE_GAP_S = 0.6
BURST_KINDS = ("bookTicker", "depth5", "kline_1m", "avgPrice", "miniTicker")
FLOOD_KINDS = ("bookTicker", "miniTicker", "kline_5m")
FLOOD_WITHOUT_CAP = 1500
FLOOD_OVER_CAP = 500
SNAPSHOTS_MAX = 100  # symbols per POST /snapshots (its limit)


@dataclasses.dataclass(slots=True)
class Answer:
    """One answer a client got."""

    stream: Stream
    role: str  # pinned, steady, burst, revisit, flood
    asked_ms: int
    answered_ms: int
    status: int  # 0: no answer at all
    value: Value | None = None
    detail: str = ""


def now_ms() -> int:
    return int(time.time() * 1000)


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: HTTPConnection | None = None

    def post(self, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """(status, JSON body); (0, None) if no answer came, even on a fresh connection."""
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = HTTPConnection("127.0.0.1", self.port, timeout=15)
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                return response.status, orjson.loads(raw) if raw else None
            except (OSError, HTTPException, orjson.JSONDecodeError):
                self.close()
        return 0, None

    def snapshot(self, stream: Stream, role: str) -> Answer:
        """``POST /snapshot/<SYMBOL>/<kind>``, timed."""
        asked = now_ms()
        status, doc = self.post(f"/snapshot/{stream[0]}/{stream[1]}")
        answer = Answer(stream, role, asked, now_ms(), status)
        if status == 200:
            answer.value = served_value(stream[1], doc)
        elif isinstance(doc, dict):
            answer.detail = str(doc.get("error", ""))[:120]
        return answer

    def snapshots(self, kind: str, symbols: list[str], role: str) -> list[Answer]:
        """``POST /snapshots`` for one kind: an answer per symbol (one status for all)."""
        asked = now_ms()
        status, doc = self.post("/snapshots", orjson.dumps({"symbols": symbols, "kind": kind}))
        answered = now_ms()
        if status != 200:
            return [Answer((s, kind), role, asked, answered, status) for s in symbols]
        return [
            Answer((s, kind), role, asked, answered, status, served_value(kind, rec))
            for s, rec in zip(symbols, doc["snapshots"], strict=True)
        ]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Chaos:
    """The running stack, its clients, the fault schedule and everything seen."""

    def __init__(
        self, seed: int, sim: Simulator, redis_server: RedisServer, messenger: Messenger, server: Gunicorn
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.sim = sim
        self.redis = redis_server
        self.messenger = messenger
        self.server = server
        self.answers: list[Answer] = []
        self.windows: list[tuple[int, str, str]] = [(now_ms(), "startup", "")]
        self.latest: dict[Stream, int] = {}  # polled stream -> status of its last answer
        self.published = Published(sim)
        self.subscribed_peak = 0
        self.pinned = [(s, k) for s in PINNED for k in PINNED_KINDS]
        trading = sorted(
            s["symbol"]
            for s in http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")[2]["symbols"]
            if s["status"] == "TRADING" and s["symbol"] not in PINNED
        )
        self.rng.shuffle(trading)
        self.steady = [(s, k) for s in trading[:STEADY_COUNT] for k in STEADY_KINDS]
        self.others = trading[STEADY_COUNT:]  # symbols for bursts and floods
        self.cap = demand_cap()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.executor = ThreadPoolExecutor(ASKERS)
        self._clients = threading.local()
        self._all_clients: list[Client] = []

    # -- clients, and the record ----------------------------------------------------------

    def client(self) -> Client:
        """This thread's connection to the server."""
        client: Client | None = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = Client(self.server.port)
            self._all_clients.append(client)
        return client

    def start(self) -> None:
        """Poll every pinned and steady stream (4 threads, a round every ~20 ms at most), and
        read the record as it grows."""
        polled = [(s, "pinned") for s in self.pinned] + [(s, "steady") for s in self.steady]
        jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
            *((self._poll, (polled[n::POLLERS],)) for n in range(POLLERS)),
            (self._every, (0.5, self.pull_record)),
        ]
        for target, args in jobs:
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _poll(self, streams: list[tuple[Stream, str]]) -> None:
        client = self.client()
        while not self._stop.is_set():
            started = time.monotonic()
            for stream, role in streams:
                answer = client.snapshot(stream, role)
                self.answers.append(answer)
                self.latest[stream] = answer.status
            self._stop.wait(max(0.0, POLL_INTERVAL_S - (time.monotonic() - started)))

    def _every(self, interval_s: float, job: Callable[[], None]) -> None:
        while not self._stop.wait(interval_s):
            job()

    def pull_record(self) -> None:
        """Everything the simulator recorded since the last pull, into the timeline."""
        self.published.pull()

    def stop(self) -> None:
        """Stop every client; take the rest of the record (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self.executor.shutdown(wait=True)
        for client in self._all_clients:
            client.close()
        self.pull_record()

    def settled(self, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until every polled stream's last answer is a 200."""
        deadline = time.monotonic() + timeout_s
        polled = self.pinned + self.steady
        while time.monotonic() < deadline:
            if all(self.latest.get(s) == 200 for s in polled):
                return True
            time.sleep(0.05)
        failing = {f"{s[0]}/{s[1]}": self.latest.get(s) for s in polled if self.latest.get(s) != 200}
        print(f"chaos: not settled after {timeout_s} s: {failing}", flush=True)
        return False

    def window(self, name: str, detail: str = "") -> None:
        """A fault begins: answers from now on count towards it."""
        self.windows.append((now_ms(), name, detail))
        line = f"chaos: t+{(now_ms() - self.windows[0][0]) / 1000:6.1f} s  {name} {detail}"
        print(line.rstrip(), flush=True)

    # -- asking for many streams at once ------------------------------------------------

    def ask_all(self, streams: list[Stream], role: str) -> None:
        """Ask for streams at once: a kind and up to 100 symbols a request, all in parallel."""
        by_kind: dict[str, list[str]] = defaultdict(list)
        for symbol, kind in streams:
            by_kind[kind].append(symbol)
        batches = [
            (kind, symbols[i : i + SNAPSHOTS_MAX])
            for kind, symbols in by_kind.items()
            for i in range(0, len(symbols), SNAPSHOTS_MAX)
        ]
        futures = [self.executor.submit(self._ask_batch, kind, symbols, role) for kind, symbols in batches]
        for future in futures:
            self.answers.extend(future.result())

    def _ask_batch(self, kind: str, symbols: list[str], role: str) -> list[Answer]:
        return self.client().snapshots(kind, symbols, role)

    def ask_each(self, streams: list[Stream], role: str) -> None:
        """Ask for each stream on its own (16 at a time), in a random order: an answer per
        stream, whatever the others have (POST /snapshots answers one error for all)."""
        shuffled = self.rng.sample(streams, len(streams))
        futures = [self.executor.submit(self._ask_one, stream, role) for stream in shuffled]
        self.answers.extend(future.result() for future in futures)

    def _ask_one(self, stream: Stream, role: str) -> Answer:
        return self.client().snapshot(stream, role)

    def revisit(self, streams: list[Stream]) -> None:
        """Ask again for streams asked for once, once they have surely gone idle and any value
        still served for them would be past the bound: the frequent kinds one by one (a value
        served for one is seen whatever the others answer), the rest a kind at a time in batches
        (a few SUBSCRIBE messages each, so that most answer within DEMAND_WAIT_MS)."""
        time.sleep(REVISIT_AFTER_S)
        each = [s for s in streams if s[1] in REVISIT_EACH_KINDS]
        self.ask_each(each, "revisit")
        for kind in dict.fromkeys(k for _, k in streams if k not in REVISIT_EACH_KINDS):
            self.ask_all([s for s in streams if s[1] == kind], "revisit")

    def sample(self, n: int) -> list[str]:
        return self.rng.sample(self.others, min(n, len(self.others)))

    # -- faults ---------------------------------------------------------------------------

    def sessions(self) -> list[dict[str, Any]]:
        """The exchange's open connections (noting the most streams ever subscribed)."""
        sessions: list[dict[str, Any]] = self.sim.sessions()
        self.subscribed_peak = max(self.subscribed_peak, len({s for x in sessions for s in x["streams"]}))
        return sessions

    def one_session(self) -> int:
        """An open connection, at random (waiting for one if none is open)."""
        sessions = wait_until(self.sessions, SETTLE_TIMEOUT_S, what="an open connection")
        return int(self.rng.choice(sessions)["id"])

    def drop(self) -> None:
        if self.rng.random() < 0.3:
            self.window("drop", "every connection")
            self.sim.fault("drop")
        else:
            sid = self.one_session()
            self.window("drop", f"connection {sid}")
            self.sim.fault("drop", session=sid)

    def stall(self) -> None:
        sid = self.one_session()
        self.window("stall", f"connection {sid}")
        self.sim.fault("stall", session=sid)
        time.sleep(SETTINGS["LIVENESS_TIMEOUT_MS"] / 1000 + 0.5)

    def cut(self) -> None:
        sid = self.one_session()
        self.window("cut", f"connection {sid} (the 24 h cut)")
        self.sim.fault("cut", session=sid)

    def shutdown(self) -> None:
        sid = self.one_session()
        self.window("serverShutdown", f"connection {sid}, closed 3 s later")
        self.sim.fault("shutdown", session=sid, grace_s=3)
        time.sleep(3.5)

    def close_1008(self) -> None:
        """Close a connection that carries no pinned stream with 1008, then drop the one that
        carries them: its reconnect must not wait out the other's 1008 backoff."""
        # More streams than one connection holds, kept asked for until the probe is over.
        spill = [(s, "bookTicker") for s in self.sample(settings().max_streams_per_connection)]
        over = threading.Event()

        def keep_asking() -> None:
            while not over.is_set():
                self.ask_all(spill, "burst")
                over.wait(1.0)

        asking = threading.Thread(target=keep_asking, daemon=True)
        asking.start()
        try:
            pinned, others = wait_until(self.layout, 15, what="a connection without pinned streams")
            target = self.rng.choice(others)
            self.window("1008", f"connection {target} closed 1008, then the pinned streams' {pinned} dropped")
            self.sim.fault("close", session=target, code=1008, reason="Too many requests")
            time.sleep(0.3)
            for sid in pinned:
                self.sim.fault("drop", session=sid)
        finally:
            over.set()
            asking.join()

    def layout(self) -> tuple[list[int], list[int]] | None:
        """(connections carrying pinned streams, the others), if there are both."""
        names = {record.stream_key(stream_name(s)) for s in self.pinned}
        pinned: list[int] = []
        others: list[int] = []
        for session in self.sessions():
            carries = names & {record.stream_key(s) for s in session["streams"]}
            (pinned if carries else others).append(session["id"])
        return (pinned, others) if pinned and others else None

    def kill(self) -> None:
        down_s = self.rng.uniform(0.5, 2.0)
        self.window("SIGKILL", f"messenger killed, restarted {down_s:.1f} s later")
        self.messenger.kill()
        time.sleep(down_s)
        self.messenger.start()

    def redis_restart(self) -> None:
        down_s = self.rng.uniform(0.5, 2.0)
        self.window("redis", f"Redis stopped for {down_s:.1f} s, restarted empty")
        self.redis.stop()
        time.sleep(down_s)
        self.redis.start()

    def burst(self) -> None:
        """Hundreds of streams asked for at once, in waves further apart than the messenger reads
        demand (0.5 s), so that each wave goes idle, and is unsubscribed, in a round of its own."""
        symbols = self.sample(self.rng.randint(BURST_SYMBOLS * 4 // 5, BURST_SYMBOLS))
        streams = [(s, k) for s in symbols for k in BURST_KINDS]
        self.window("burst", f"{len(streams)} on-demand streams in {BURST_WAVES} waves, and again once idle")
        for wave in range(BURST_WAVES):
            self.ask_all([(s, k) for s in symbols[wave::BURST_WAVES] for k in BURST_KINDS], "burst")
            time.sleep(BURST_WAVE_GAP_S)
        self.revisit(streams)

    def flood(self) -> None:
        size = self.cap + FLOOD_OVER_CAP if self.cap else FLOOD_WITHOUT_CAP
        symbols = self.sample(-(-size // len(FLOOD_KINDS)))
        streams = [(s, k) for s in symbols for k in FLOOD_KINDS][:size]
        self.window("flood", f"{len(streams)} on-demand streams at once (demand cap: {self.cap or 'none'})")
        asking = threading.Thread(target=self.ask_all, args=(streams, "flood"), daemon=True)
        asking.start()
        while asking.is_alive():
            self.sessions()  # the peak of subscribed streams
            asking.join(0.5)
        self.revisit(streams)

    def run(self, duration_s: float, only: list[str]) -> None:
        """Every fault once (two bursts), in a seeded order, however short the time; then more
        drawn at random until it is up; ``only``: just these faults."""
        faults = {
            "drop": self.drop, "stall": self.stall, "1008": self.close_1008, "cut": self.cut,
            "serverShutdown": self.shutdown, "SIGKILL": self.kill, "redis": self.redis_restart,
            "burst": self.burst, "flood": self.flood,
        }  # fmt: skip
        unknown = set(only) - set(faults)
        assert not unknown, f"CHAOS_FAULTS: no fault {unknown}; faults: {', '.join(faults)}"
        names = only or [*faults, "burst"]
        first = self.rng.sample(names, len(names))
        more = [n for n in names if n in ("drop", "stall", "cut", "burst")] or names
        deadline = time.monotonic() + duration_s
        while first or time.monotonic() < deadline:
            faults[first.pop(0) if first else self.rng.choice(more)]()
            self.settled()
            time.sleep(self.rng.uniform(0.5, 2.0))
        self.window("end")


def settings() -> Settings:
    """The settings the messenger and the server run with (the environment, then ours)."""
    return Settings.from_env({**os.environ, **{name: str(value) for name, value in SETTINGS.items()}})


def demand_cap() -> int:
    """The most on-demand streams the settings allow."""
    return settings().demand_max_streams


@pytest.fixture
def machine() -> Iterator[None]:
    """The machine to this run alone, not beside a compose stack (tests.machine_lock); set up
    before ``started`` and so torn down after it has stopped every process."""
    with holding_the_machine():
        yield


@pytest.fixture
def chaos(machine: None, started: Started, logs_dir: Path) -> Iterator[Chaos]:
    seed = int(os.environ.get("CHAOS_SEED") or time.time_ns() % 2**31)
    print(f"\nchaos: seed {seed} (CHAOS_SEED={seed} replays this schedule)", flush=True)
    redis_server: RedisServer = started.add(RedisServer(logs_dir))
    sim: Simulator = started.add(Simulator(logs_dir, "--record", "--rate", "5", "--seed", str(seed)))
    env = messenger_env(sim, redis_server.url, **SETTINGS)
    pinned = [s.lower() for s in PINNED]
    messenger: Messenger = started.add(Messenger(logs_dir, env, *pinned, "--streams", ",".join(PINNED_KINDS)))
    server: Gunicorn = started.add(Gunicorn(logs_dir, redis_server.url, **SETTINGS))
    run = Chaos(seed, sim, redis_server, messenger, server)
    try:
        yield run
    finally:
        run.stop()  # before the processes: its clients talk to them


# -- the report ---------------------------------------------------------------------------


def non_200_runs(chaos: Chaos, roles: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """Per fault: the longest run of non-200 answers of one polled stream that began in its
    window (ms, which stream and what it answered)."""
    by_stream: dict[Stream, list[Answer]] = defaultdict(list)
    for answer in chaos.answers:
        if answer.role in roles:
            by_stream[answer.stream].append(answer)
    longest: dict[str, tuple[int, str]] = {}
    for stream, answers in by_stream.items():
        answers.sort(key=lambda a: a.asked_ms)
        for first, end_ms, statuses in failing_runs(answers):
            fault = fault_at(chaos, first.asked_ms)
            length = end_ms - first.asked_ms
            if length > longest.get(fault, (-1, ""))[0]:
                seen = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
                longest[fault] = (length, f"{stream[0]}/{stream[1]}: {seen} ({first.detail})")
    return longest


def failing_runs(answers: list[Answer]) -> Iterator[tuple[Answer, int, Counter[int]]]:
    """Each run of non-200 answers: its first answer, when the next 200 was asked for (or the
    last answer came), and its statuses."""
    first: Answer | None = None
    statuses: Counter[int] = Counter()
    for answer in answers:
        if answer.status != 200:
            first = first or answer
            statuses[answer.status] += 1
        elif first is not None:
            yield first, answer.asked_ms, statuses
            first, statuses = None, Counter()
    if first is not None:
        yield first, answers[-1].answered_ms, statuses


def fault_at(chaos: Chaos, at_ms: int) -> str:
    return [name for start, name, _ in chaos.windows if start <= at_ms][-1]


def judged(chaos: Chaos) -> Judgement:
    """The verdicts on every 200 (tests/oracle.py)."""
    origin_ms = chaos.windows[0][0]
    judgement = Judgement(chaos.published, BOUND_MS, origin_ms)
    for answer in chaos.answers:
        if answer.value is not None:
            at_s = (answer.asked_ms - origin_ms) / 1000
            name = stream_name(answer.stream)
            where = f"{answer.role} {name} at t+{at_s:.1f} s during {fault_at(chaos, answer.asked_ms)}"
            judgement.judge(answer.stream, answer.value, answer.asked_ms, answer.answered_ms, where)
    return judgement


def limit_violations(sim: Simulator) -> list[str]:
    state = sim.state()
    found = [
        f"connection {s['id']}: {', '.join(s['violations'])}"
        for s in state["sessions"] + state["closed"]
        if s["violations"]
    ]
    if state["rejected_connections"]:
        found.append(f"{state['rejected_connections']} connection attempts refused (over 300 per 5 min)")
    if state.get("rest_rejected"):
        found.append(f"{state['rest_rejected']} REST requests answered 429 (over the weight limit)")
    print(f"chaos: the simulator's loop was held up {state.get('loop_lag_max_ms')} ms at most")
    return found


def test_chaos_never_serves_a_value_the_exchange_did_not_send_or_replaced_too_long_ago(chaos: Chaos) -> None:
    duration_s = float(os.environ.get("CHAOS_DURATION_S", "45"))
    print(f"chaos: bound {BOUND_MS} ms: LIVENESS_TIMEOUT_MS + SNAPSHOT_TTL_MS + {SLACK_MS} ms", flush=True)
    wait_until(lambda: chaos.server.snapshot(PINNED[0])[0] == 200, 20, what="the first pinned value")
    chaos.start()
    assert chaos.settled(), f"not every polled stream answered 200 at the start: {chaos.latest}"
    chaos.run(duration_s, [f for f in os.environ.get("CHAOS_FAULTS", "").split(",") if f])
    chaos.stop()
    violations = limit_violations(chaos.sim)
    judgement = judged(chaos)
    never, stale = judgement.never, judgement.stale
    pinned_runs = non_200_runs(chaos, ("pinned",))
    report(chaos, pinned_runs, non_200_runs(chaos, ("steady",)))
    published = chaos.published
    print(f"chaos: {judgement.summary()}; against {published.recorded} publications recorded "
          f"({published.lost} lost); most streams subscribed {chaos.subscribed_peak}")  # fmt: skip
    for line in (never + stale)[:20]:
        print(f"chaos:   {line}")

    seed = f"(CHAOS_SEED={chaos.seed})"
    assert published.lost == 0, f"the record lost {published.lost} entries: the oracle cannot judge {seed}"
    assert not never, f"{len(never)} answers carried a value the exchange never sent {seed}: {never[:5]}"
    too_old = f"a value superseded over {BOUND_MS} ms before"
    assert not stale, f"{len(stale)} answers carried {too_old} {seed}: {stale[:5]}"
    assert not violations, f"Binance's limits broken {seed}: {violations}"
    for fault in ("burst", "flood"):
        length, what = pinned_runs.get(fault, (0, ""))
        assert fault not in pinned_runs, f"pinned streams failed in a {fault} for {length} ms {seed}: {what}"
    length, what = pinned_runs.get("1008", (0, ""))
    assert length <= PROBE_RECOVERY_MS, (
        f"after one connection's 1008, the pinned streams' dropped connection took {length} ms "
        f"to serve again (over {PROBE_RECOVERY_MS} ms) {seed}: {what}"
    )
    if chaos.cap:
        most = len(chaos.pinned) + chaos.cap
        assert chaos.subscribed_peak <= most, f"{chaos.subscribed_peak} streams subscribed, cap {most} {seed}"


def report(chaos: Chaos, pinned: dict[str, tuple[int, str]], steady: dict[str, tuple[int, str]]) -> None:
    """Counts by status, and the longest non-200 run per fault."""
    by_role: dict[str, Counter[int]] = defaultdict(Counter)
    for answer in chaos.answers:
        by_role[answer.role][answer.status] += 1
    print(f"chaos: seed {chaos.seed}; answers by status (0: no answer):")
    for role, counts in sorted(by_role.items()):
        print(f"chaos:   {role:8} " + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items())))
    print("chaos: longest non-200 run per fault, pinned | polled on demand:")
    faults = dict.fromkeys(name for _, name, _ in chaos.windows)
    for fault in faults:
        (p_ms, p_what), (s_ms, s_what) = pinned.get(fault, (0, "")), steady.get(fault, (0, ""))
        print(f"chaos:   {fault:15} {p_ms:6} ms {p_what[:70]:70} | {s_ms:6} ms {s_what[:70]}")
