"""The lean script call (contract.packed_script) answers exactly as redis-py's, and no failure,
whenever it comes, makes it hand one call's reply to another."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import redis

from contract.packed_script import PackedScript, _kept
from tests.processes import RedisServer

pytestmark = pytest.mark.redis

# Each key's own value with the key's name: a reply read for the wrong call shows.
ECHO = "local out = {} for i, key in ipairs(KEYS) do out[i] = {key, redis.call('GET', key)} end return out"


def lean(client: redis.Redis) -> tuple[PackedScript, Any]:
    script = client.register_script(ECHO)
    return PackedScript(client, script), script


def test_it_answers_as_redis_pys_script_call(real_redis: redis.Redis) -> None:
    real_redis.set("a", "1")
    real_redis.set("b", b"\x00\r\n\xff")
    call, script = lean(real_redis)
    for keys in (["a"], ["a", "b", "missing"], ["caf\u00e9"]):
        assert call(keys) == script(keys=keys)
    assert call(["b"]) == [[b"b", b"\x00\r\n\xff"]]


def test_a_flushed_script_is_loaded_again_and_answers(real_redis: redis.Redis) -> None:
    real_redis.set("a", "1")
    call, _ = lean(real_redis)
    assert call(["a"]) == [[b"a", b"1"]]
    real_redis.script_flush()  # as after a restart, or on a promoted replica
    assert call(["a"]) == [[b"a", b"1"]]
    assert call(["a"]) == [[b"a", b"1"]]


def test_a_restarted_redis_is_read_again_on_the_next_call(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    call, _ = lean(client)
    client.set("a", "1")
    assert call(["a"]) == [[b"a", b"1"]]
    redis_server.stop()  # the kept connection is now broken
    redis_server.start()
    redis_server.client().set("a", "2")
    assert call(["a"]) == [[b"a", b"2"]]
    client.close()


def test_a_call_cut_off_mid_read_leaves_no_reply_for_the_next(
    real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_redis.set("a", "1")
    real_redis.set("b", "2")
    call, _ = lean(real_redis)
    assert call(["a"]) == [[b"a", b"1"]]

    def cut_off(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt  # anything, e.g. a greenlet killed while it waited for Redis

    with monkeypatch.context() as patch:  # the command goes out; its reply stays unread
        patch.setattr(redis.connection.Connection, "read_response", cut_off)
        with pytest.raises(KeyboardInterrupt):
            call(["a"])
    assert call(["b"]) == [[b"b", b"2"]]


def test_a_timed_out_read_is_not_repeated_and_its_late_reply_is_not_taken(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    redis_server.client().mset({"a": "1", "b": "2"})
    call, _ = lean(client)
    assert call(["a"]) == [[b"a", b"1"]]
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(redis.TimeoutError):
            call(["a"])
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert call(["b"]) == [[b"b", b"2"]]  # not the late answer to ["a"]
    client.close()


def test_readers_of_one_pool_share_what_they_keep(redis_server: RedisServer) -> None:
    """However many readers are made and called, a pool of two serves them all: what is kept is
    one idle list per pool, as long as the most calls ever made at once; a failed call's fallback
    finds a free connection too."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2, max_connections=2)
    client.set("a", "1")
    for _ in range(50):
        call, _ = lean(client)
        assert call(["a"]) == [[b"a", b"1"]]
    client.script_flush()
    assert call(["a"]) == [[b"a", b"1"]]  # NOSCRIPT, then redis-py's call, on a pool of two
    assert len(client.connection_pool._in_use_connections) == 1  # the one kept
    client.close()


def test_a_sentinel_or_blocking_pool_gets_every_connection_back(redis_server: RedisServer) -> None:
    pool = redis.BlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=1)
    client = redis.Redis(connection_pool=pool)
    client.set("a", "1")
    call, _ = lean(client)
    for _ in range(3):
        assert call(["a"]) == [[b"a", b"1"]]
        assert client.get("a") == b"1"  # the pool's one connection is free again
    client.close()


def test_a_forked_process_does_not_use_its_parents_connections(
    real_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_redis.set("a", "1")
    call, _ = lean(real_redis)
    call(["a"])
    [parents] = _kept(real_redis.connection_pool)
    monkeypatch.setattr("contract.packed_script.os.getpid", lambda: -1)
    assert call(["a"]) == [[b"a", b"1"]]
    assert _kept(real_redis.connection_pool) and parents not in _kept(real_redis.connection_pool)
