"""Hardening: Redis over TLS with a password, no debug mode, no unvalidated symbol in a key."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from contract.keys import DEMAND_KEY, SYMBOLS_KEY, snapshot_key
from tests.processes import Gunicorn, Messenger, Process, RedisServer, Simulator, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

PASSWORD = "s3cret-pw"  # noqa: S105 (a throwaway test server's)


def make_certificates(folder: Path) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it; returns the CA file."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=transmute-test-ca")  # fmt: skip
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.cnf")  # fmt: skip
    return folder / "ca.crt"


class TlsRedis(Process):
    """redis-server with TLS only (no plain port) and a password."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.ca = make_certificates(folder)
        argv = [shutil.which("redis-server") or "redis-server", "--port", "0", "--tls-port", str(self.port),
                "--bind", "127.0.0.1", "--tls-cert-file", str(folder / "server.crt"),
                "--tls-key-file", str(folder / "server.key"), "--tls-ca-cert-file", str(self.ca),
                "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
                "--dir", str(folder)]  # fmt: skip
        super().__init__(f"redis-tls-{self.port}", argv, folder)

    def url(self, password: str = PASSWORD) -> str:
        return f"rediss://:{password}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"

    def start(self) -> None:
        super().start()
        wait_until(lambda: redis.Redis.from_url(self.url()).ping(), 10, what="TLS redis-server")


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_over_tls_with_a_password_works_end_to_end(
    sim: Simulator, tls_redis: TlsRedis, logs_dir: Path, started: Any, redis_server: RedisServer
) -> None:
    from tests.processes import messenger_env

    started.add(
        Messenger(logs_dir, {**messenger_env(sim, redis_server.url), "REDIS_URL": tls_redis.url()}, "btcusdt")
    )
    server: Gunicorn = started.add(Gunicorn(logs_dir, tls_redis.url()))
    wait_until(lambda: server.snapshot("BTC_USDT")[0] == 200, 10, what="a value over TLS")
    with pytest.raises(redis.RedisError):  # and it really is TLS with a password
        redis.Redis.from_url(f"redis://127.0.0.1:{tls_redis.port}/0", socket_timeout=2).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(tls_redis.url("wrong")).ping()


def test_a_wrong_redis_password_is_a_503_not_a_crash(
    tls_redis: TlsRedis, logs_dir: Path, started: Any
) -> None:
    server: Gunicorn = started.add(Gunicorn(logs_dir, tls_redis.url("wrong")))
    status, body = server.snapshot("BTC_USDT")
    assert (status, body["status_code"]) == (503, 503)


def test_flask_debug_is_never_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from server import create_app

    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"redis_url": "redis://127.0.0.1:1/0"})
    assert app.debug is False
    response = app.test_client().get("/nope")
    assert response.get_json()["status_code"] == 404  # no debugger page, ever


def test_no_demand_becomes_a_key_unless_it_names_a_trading_symbol(
    sim: Simulator, messenger_factory: Callable[..., Messenger], real_redis: redis.Redis
) -> None:
    messenger_factory(sim, "btcusdt")
    wait_until(lambda: real_redis.exists(SYMBOLS_KEY), 5)
    # "<kind>:*" asks for a whole market, which only bookticker and ticker lists do.
    hostile = ["bookticker:../../etc", "bookticker:BTC USDT", "avgprice:*", "bookticker:btcusdt\\x00",
               "bookticker:" + "A" * 500, "nokind:BTCUSDT", "bookticker:ETHBTC"]  # fmt: skip
    real_redis.zadd(DEMAND_KEY, dict.fromkeys(hostile, 10**13))
    real_redis.publish(DEMAND_KEY, "x")
    wait_until(
        lambda: real_redis.exists(snapshot_key("bookticker", "ethbtc")), 5, what="the one valid demand"
    )
    wait_until(lambda: real_redis.zcard(DEMAND_KEY) <= 2, 5, what="the invalid ones to be dropped")
    keys = {k.decode() for k in real_redis.keys("transmute:bookticker:*")}  # type: ignore[union-attr]
    assert keys == {snapshot_key("bookticker", "btcusdt"), snapshot_key("bookticker", "ethbtc")}
