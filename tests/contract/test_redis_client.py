"""The one Redis client factory: each mode built from the settings, and bad settings refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from contract.redis_client import CLUSTER, SENTINEL, SINGLE, mode, redis_client, sentinel_warning
from contract.settings import Settings, SettingsError
from tests.conftest import Started
from tests.processes import RedisSentinel, RedisServer, free_port, wait_until

SENTINELS = "10.0.0.1:26379, sentinel-b:26380,[::1]:26381"


def test_a_plain_url_is_one_redis_with_the_callers_timeouts() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://:pw@redis.example:6380/3"})
    client = redis_client(settings, timeout_s=0.5, retries=1)
    kwargs = client.connection_pool.connection_kwargs
    assert mode(settings) == SINGLE
    address = (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"])
    assert address == ("redis.example", 6380, 3, "pw")
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.5, 0.5)
    assert kwargs["retry"].get_retries() == 1


def test_sentinels_name_the_primary_and_the_url_gives_password_tls_and_db() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "rediss://app:pw@ignored.example:1/2?ssl_cert_reqs=none",
            "REDIS_SENTINELS": SENTINELS,
            "REDIS_SENTINEL_SERVICE": "prices",
            "REDIS_SENTINEL_PASSWORD": "spw",
        }
    )
    client = redis_client(settings, timeout_s=2.0, retries=0)
    pool = client.connection_pool
    assert mode(settings) == SENTINEL
    assert isinstance(pool, SentinelConnectionPool)
    assert (pool.service_name, pool.is_master) == ("prices", True)  # writes and reads: the primary
    assert pool.connection_class is SentinelManagedSSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "pw", 2)
    assert "host" not in kwargs  # the sentinels say where the primary is
    assert kwargs["socket_timeout"] == 2.0 and kwargs["retry"].get_retries() == 0
    sentinels = pool.sentinel_manager.sentinels
    addresses = [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                 for s in sentinels]  # fmt: skip
    assert addresses == [("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)]
    sentinel = sentinels[0].connection_pool.connection_kwargs
    assert (sentinel["password"], sentinel["ssl_cert_reqs"]) == ("spw", "none")
    assert sentinel["socket_timeout"] == 2.0


def test_sentinels_without_tls_or_password() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_SENTINELS": "h:26379"})
    pool = redis_client(settings, timeout_s=1.0, retries=0).connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.connection_class is SentinelManagedConnection
    assert pool.connection_kwargs.get("password") is None
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] is None


@pytest.mark.redis
def test_cluster_mode_is_redis_pys_cluster_client_found_from_one_node(
    started: Started, logs_dir: Path
) -> None:
    node = started.add(RedisServer(logs_dir, "--cluster-enabled", "yes", "--cluster-config-file",
                                   f"nodes-{free_port()}.conf"))  # fmt: skip
    with node.client() as admin:
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # a cluster of one node
        wait_until(lambda: admin.cluster("info")["cluster_state"] == "ok", 10, what="the cluster")
    settings = Settings.from_env({"REDIS_URL": node.url, "REDIS_CLUSTER": "1"})
    client: Any = redis_client(settings, timeout_s=1.0, retries=0)
    assert mode(settings) == CLUSTER
    assert isinstance(client, RedisCluster)
    client.set("a", "1")
    assert client.get("a") == b"1"
    client.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "sentinel"}, "REDIS_SENTINELS='sentinel' must be host:port[,host:port...]"),
        ({"REDIS_SENTINELS": "a:26379,b:0"}, "REDIS_SENTINELS='a:26379,b:0' must be host:port"),
        ({"REDIS_SENTINELS": "a:26379,"}, "REDIS_SENTINELS='a:26379,' must be host:port"),
        ({"REDIS_SENTINELS": "a:２６３７９"}, "REDIS_SENTINELS='a:２６３７９' must be host:port"),
        ({"REDIS_SENTINELS": "u@a:26379"}, "REDIS_SENTINELS='u@a:26379' must be host:port"),
        ({"REDIS_SENTINELS": "a:1", "REDIS_CLUSTER": "1"}, "REDIS_SENTINELS and REDIS_CLUSTER=1 exclude"),
        (
            {"REDIS_SENTINELS": "a:1", "REDIS_URL": "unix:///run/redis.sock"},
            "REDIS_SENTINELS needs a redis://",
        ),
        ({"REDIS_SENTINEL_SERVICE": "my master"}, "REDIS_SENTINEL_SERVICE='my master' must be a name"),
        ({"REDIS_CLUSTER": "2"}, "REDIS_CLUSTER=2 is above the maximum 1"),
        ({"REDIS_CLUSTER": "yes"}, "REDIS_CLUSTER='yes' is not a valid int"),
        ({"REDIS_CLUSTER": "1", "REDIS_URL": "redis://h:1/2"}, "REDIS_CLUSTER=1: a cluster has only db 0"),
    ],
)
def test_bad_mode_settings_stop_with_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_defaults_are_one_redis() -> None:
    settings = Settings.from_env({})
    chosen = (settings.redis_sentinels, settings.redis_sentinel_service, settings.redis_cluster)
    assert chosen == ("", "mymaster", 0)
    assert mode(settings) == SINGLE


@pytest.mark.redis
def test_sentinels_that_may_promote_while_a_copied_voucher_lives_are_warned_of(
    started: Started, logs_dir: Path
) -> None:
    primary = started.add(RedisServer(logs_dir))
    sentinel = started.add(RedisSentinel(logs_dir, primary.port, "prices", quorum=1, down_after_ms=1500))
    env = {"REDIS_SENTINELS": f"127.0.0.1:{free_port()},127.0.0.1:{sentinel.port}",  # the first is down
           "REDIS_SENTINEL_SERVICE": "prices"}  # fmt: skip
    warning = sentinel_warning(Settings.from_env({**env, "SNAPSHOT_TTL_MS": "1000"}))
    assert warning is not None
    assert "down-after-milliseconds 1500 for prices is under twice SNAPSHOT_TTL_MS (1000)" in warning
    assert sentinel_warning(Settings.from_env({**env, "SNAPSHOT_TTL_MS": "750"})) is None
    assert sentinel_warning(Settings.from_env({})) is None


def test_sentinels_that_do_not_answer_are_named_in_one_short_line() -> None:
    """with REDIS_SENTINELS pointing nowhere, every component logs redis-py's
    MasterNotFoundError as is: about 1,150 characters of the sentinel client's repr
    ("No master found for 'mymaster' : <redis.client.Redis(<redis.connection.ConnectionPool(...")
    on each retry, where a Redis down gives "Error 111 connecting to host:port. Connection refused."
    What the logs print (str of the error) should be short and name the sentinel that failed."""
    import redis

    port = free_port()  # nothing listens there
    settings = Settings.from_env({"REDIS_SENTINELS": f"127.0.0.1:{port}"})
    with pytest.raises(redis.RedisError) as caught:
        redis_client(settings, timeout_s=0.5, retries=0).ping()
    line = str(caught.value)
    assert "\n" not in line
    assert len(line) < 300, line
    assert f"127.0.0.1:{port}" in line
