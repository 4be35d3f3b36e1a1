"""Shared fixtures: Redis (fake and real), and the real processes of the end-to-end path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from tests.processes import Gunicorn, Messenger, Process, RedisServer, Simulator, messenger_env

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where child processes write their output."""
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_server(logs_dir: Path) -> Iterator[RedisServer]:
    """One private redis-server for the session; tests may stop and restart it."""
    server = RedisServer(logs_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def real_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private redis-server, running and empty."""
    if not redis_server.running():
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def fake_redis() -> redis.Redis:
    """An in-memory Redis for fast unit tests."""
    client: redis.Redis = fakeredis.FakeRedis()
    return client


@pytest.fixture(params=[pytest.param("fake"), pytest.param("real", marks=pytest.mark.redis)])
def any_redis(request: pytest.FixtureRequest) -> redis.Redis:
    """The same test on fakeredis and on a real redis-server."""
    fixture = "fake_redis" if request.param == "fake" else "real_redis"
    client: redis.Redis = request.getfixturevalue(fixture)
    return client


class Started:
    """Processes a test started; all stopped at its end, logs shown if it failed."""

    def __init__(self) -> None:
        self.processes: list[Process] = []

    def add(self, process: Process) -> Any:
        self.processes.append(process)  # first: stopped and its log shown even if its start fails
        process.start()
        return process


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[Started]:
    """Start processes with ``started.add(...)``; they are stopped after the test."""
    box = Started()
    yield box
    for process in reversed(box.processes):
        process.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for process in box.processes:
            print(f"----- {process.name} -----\n{process.log()[-6000:]}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``messenger`` every test that starts a real messenger (the messenger_factory fixture or
    tests.processes.Messenger itself): `make test` runs those again with WS_TRANSPORT=picows."""
    for item in items:
        module = getattr(item, "module", None)
        if (
            "messenger_factory" in getattr(item, "fixturenames", ())
            or getattr(module, "Messenger", None) is Messenger
        ):
            item.add_marker(pytest.mark.messenger)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, for fixtures that show logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def sim_factory(started: Started, logs_dir: Path) -> Callable[..., Simulator]:
    """Start a simulator with extra command-line options."""

    def make(*args: str) -> Simulator:
        sim: Simulator = started.add(Simulator(logs_dir, *args))
        return sim

    return make


@pytest.fixture
def sim(sim_factory: Callable[..., Simulator]) -> Simulator:
    """A simulator with a lively market (20 updates a second per stream)."""
    return sim_factory("--rate", "20")


@pytest.fixture
def messenger_factory(
    started: Started, logs_dir: Path, redis_server: RedisServer
) -> Callable[..., Messenger]:
    """Start a messenger against a simulator: ``messenger_factory(sim, "btcusdt", SNAPSHOT_TTL_MS=500)``."""

    def make(simulator: Simulator, *symbols: str, **settings: Any) -> Messenger:
        env = messenger_env(simulator, redis_server.url, **settings)
        messenger: Messenger = started.add(Messenger(logs_dir, env, *symbols))
        return messenger

    return make


@pytest.fixture(scope="session")
def gunicorn(logs_dir: Path, redis_server: RedisServer) -> Iterator[Gunicorn]:
    """The server as shipped (gunicorn, two workers), on the session's redis-server."""
    server = Gunicorn(logs_dir, redis_server.url)
    server.start()
    yield server
    server.stop()
