"""The Redis writer: values, connection liveness, deletions, and surviving a Redis restart.

What a user would be served is read through the server's read rule (contract.servable).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from contract.keys import RECORD_TTL_MS, key_tag, snapshot_key, voucher_key
from contract.servable import CurrentReader, pairs, servable
from contract.settings import Settings
from messenger.book import Book
from messenger.conditional import SCRIPT_KEYS
from messenger.service import redis_client
from messenger.writer import Writer
from tests.messenger.test_book import KEY, QUIET, Conn, fields, on
from tests.processes import RedisServer, wait_until

TTL_MS = 600
RUN = "testrun1"


@pytest.fixture
def book() -> Book:
    return Book(liveness_timeout_s=5.0)


def start_writer(book: Book, client: redis.Redis) -> Writer:
    writer = Writer(book, client, ttl_ms=TTL_MS, refresh_interval_s=TTL_MS / 3000, messenger_id=RUN)
    writer.start()
    return writer


@pytest.fixture
def writer(book: Book, any_redis: redis.Redis) -> Iterator[Writer]:
    writer = start_writer(book, any_redis)
    yield writer
    writer.stop()


def stored(client: redis.Redis, key: str) -> Any:
    raw = client.get(key)
    return None if raw is None else orjson.loads(raw)


def served(client: redis.Redis, key: str) -> Any:
    """What the server would serve for ``key`` now (None: nothing)."""
    [pair] = pairs(CurrentReader(client)([key]))
    return servable(*pair)


def test_a_value_lands_with_its_ttl_in_one_write(writer: Writer, book: Book, any_redis: redis.Redis) -> None:
    conn = Conn(time.monotonic())
    on(book, conn)
    before = int(time.time() * 1000)
    book.on_frame(conn, KEY, 42, fields("25.35190000", 42), time.monotonic())
    record = wait_until(lambda: served(any_redis, KEY), 2)
    assert record["bid_price"] == "25.35190000"
    assert record["update_id"] == 42
    assert record["source"] == "stream"
    assert "voucher" not in record
    assert before - 5 <= record["ts"] <= record["as_of"] <= int(time.time() * 1000) + 5
    assert stored(any_redis, KEY)["voucher"] == voucher_key(RUN, conn.id, key_tag(KEY))
    assert TTL_MS < any_redis.pttl(KEY) <= RECORD_TTL_MS  # a bound on leftovers, not on freshness
    assert 0 < any_redis.pttl(voucher_key(RUN, conn.id, key_tag(KEY))) <= TTL_MS


def test_a_live_quiet_value_outlives_its_ttl(writer: Writer, book: Book, any_redis: redis.Redis) -> None:
    conn = Conn(time.monotonic())
    on(book, conn)
    book.on_frame(conn, QUIET, 1, fields("1.0", 1), time.monotonic())
    first = wait_until(lambda: served(any_redis, QUIET), 2)
    written = stored(any_redis, QUIET)
    deadline = time.monotonic() + 3 * TTL_MS / 1000
    while time.monotonic() < deadline:
        conn.last_heard = time.monotonic()  # pongs keep coming; the symbol never changes
        assert served(any_redis, QUIET) is not None
        time.sleep(0.05)
    assert stored(any_redis, QUIET) == written  # servable without being rewritten
    last = served(any_redis, QUIET)
    assert last is not None
    assert last["ts"] == first["ts"]
    assert last["as_of"] >= first["as_of"] + 2 * TTL_MS - 100


def test_a_value_whose_connection_goes_silent_expires_within_the_ttl(
    writer: Writer, book: Book, any_redis: redis.Redis
) -> None:
    book.liveness_timeout_s = 0.3
    conn = Conn(time.monotonic())
    on(book, conn)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), time.monotonic())
    wait_until(lambda: served(any_redis, KEY), 2)
    silent_since = time.monotonic()
    wait_until(lambda: served(any_redis, KEY) is None, 2)
    assert time.monotonic() - silent_since <= 0.3 + TTL_MS / 1000 + 0.2


def test_an_invalidated_key_is_deleted_at_once(writer: Writer, book: Book, any_redis: redis.Redis) -> None:
    conn = Conn(time.monotonic())
    on(book, conn)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), time.monotonic())
    wait_until(lambda: any_redis.exists(KEY), 2)
    released = time.monotonic()
    book.release(conn)
    wait_until(lambda: not any_redis.exists(KEY), 1)
    assert time.monotonic() - released < 0.1
    wait_until(lambda: not any_redis.exists(voucher_key(RUN, conn.id, key_tag(KEY))), 1)


def test_stopping_deletes_what_was_released(book: Book, any_redis: redis.Redis) -> None:
    writer = start_writer(book, any_redis)
    conn = Conn(time.monotonic())
    on(book, conn)
    book.on_frame(conn, KEY, 1, fields("1.0", 1), time.monotonic())
    wait_until(lambda: any_redis.exists(KEY), 2)
    book.release(conn)
    writer.stop()
    assert not any_redis.exists(KEY)


@pytest.mark.redis
def test_redis_restart_is_survived_and_everything_rewritten(book: Book, redis_server: RedisServer) -> None:
    client = redis_client(Settings.from_env({}, redis_url=redis_server.url))
    client.flushall()
    writer = start_writer(book, client)
    try:
        conn = Conn(time.monotonic())
        on(book, conn)
        book.on_frame(conn, QUIET, 1, fields("1.0", 1), time.monotonic())
        wait_until(lambda: served(client, QUIET), 2)
        redis_server.stop()
        conn.last_heard = time.monotonic()
        wait_until(lambda: not writer.healthy, 3, what="the writer to notice")
        redis_server.start()  # empty: it keeps nothing on disk
        back = redis_server.client()

        def rewritten() -> bool:
            conn.last_heard = time.monotonic()  # the connection keeps talking meanwhile
            return served(back, QUIET) is not None

        wait_until(rewritten, 5)
        assert served(back, QUIET)["bid_price"] == "1.0"
        assert writer.errors >= 1
        back.close()
    finally:
        writer.stop()
        client.close()
        if not redis_server.running():
            redis_server.start()


@pytest.mark.redis
def test_a_redis_restart_between_two_batches_is_noticed_and_a_quiet_value_rewritten(
    book: Book, redis_server: RedisServer
) -> None:
    """Redis restarts (empty) while the writer has nothing to write: the writer's next batch
    must notice, though a connection pool would have reconnected without a word, and rewrite
    the value that does not change, at once rather than at its next renewal minutes later."""
    client = redis_client(Settings.from_env({}, redis_url=redis_server.url))
    client.flushall()
    # Liveness announced every 2.5 s: the restart falls between two batches.
    writer = Writer(book, client, ttl_ms=15_000, refresh_interval_s=5.0, messenger_id=RUN)
    writer.start()
    try:
        conn = Conn(time.monotonic())
        on(book, conn)
        book.on_frame(conn, QUIET, 1, fields("1.0", 1), time.monotonic())
        wait_until(lambda: served(client, QUIET), 2)
        batches = writer.batches
        redis_server.stop()
        redis_server.start()  # empty: it keeps nothing on disk
        assert writer.batches == batches, "the writer wrote during the restart: the test proves nothing"
        back = redis_server.client()

        def rewritten() -> bool:
            conn.last_heard = time.monotonic()  # the connection keeps talking meanwhile
            return served(back, QUIET) is not None

        wait_until(rewritten, 6, what="the quiet value back after the writer's next batch")
        assert served(back, QUIET)["bid_price"] == "1.0"
        back.close()
    finally:
        writer.stop()
        client.close()
        if not redis_server.running():
            redis_server.start()


@pytest.mark.redis
def test_a_closed_candle_is_published_though_the_next_one_replaced_it_before_the_write(
    book: Book, real_redis: redis.Redis
) -> None:
    conn = Conn(time.monotonic())
    on(book, conn)
    watcher = real_redis.pubsub(ignore_subscribe_messages=True)
    watcher.subscribe(KEY)
    candle = {"symbol": "BTCUSDT", "open_time": 0, "close_time": 59_999, "close": "1.0", "closed": False}
    now = time.monotonic()
    book.on_frame(conn, KEY, (0, 1, 1), {**candle, "closed": True}, now)
    book.on_frame(conn, KEY, (60_000, 2, 0), {**candle, "open_time": 60_000, "close_time": 119_999}, now)
    writer = Writer(book, real_redis, ttl_ms=TTL_MS, refresh_interval_s=TTL_MS / 3000, messenger_id=RUN,
                    watched=lambda: frozenset({KEY}))  # fmt: skip
    writer.start()  # only now: both frames are in its first batch
    try:
        published: list[dict[str, Any]] = []
        deadline = time.monotonic() + 2
        while len(published) < 2 and time.monotonic() < deadline:
            message = watcher.get_message(timeout=0.1)
            if message is not None:
                published.append(orjson.loads(message["data"]))
        assert [(p["open_time"], p["closed"]) for p in published] == [(0, True), (60_000, False)]
        assert stored(real_redis, KEY)["open_time"] == 60_000  # only the latest is stored
    finally:
        writer.stop()
        watcher.close()


def lose_the_last_write(client: redis.Redis, key: str, older: dict[str, Any]) -> None:
    """What a replica promoted by a failover holds when the old primary acknowledged a write it
    had not passed on yet: the record before it, still naming a live voucher."""
    client.set(key, orjson.dumps(older), px=RECORD_TTL_MS)


@pytest.mark.redis
def test_a_silent_reconnect_rewrites_everything_under_new_vouchers(
    book: Book, real_redis: redis.Redis
) -> None:
    """redis-py may reconnect without an error (a Sentinel pool, to the new primary): the writer
    sends nothing but a full rewrite on a connection made anew, and its records name vouchers of
    a new generation, so the older record the new primary held is never served again."""
    writer = start_writer(book, real_redis)
    try:
        conn = Conn(time.monotonic())
        on(book, conn)
        book.on_frame(conn, QUIET, 1, fields("1.0", 1), time.monotonic())
        older = wait_until(lambda: stored(real_redis, QUIET), 2)
        book.on_frame(conn, QUIET, 2, fields("2.0", 2), time.monotonic())
        wait_until(lambda: stored(real_redis, QUIET)["update_id"] == 2, 2)
        lose_the_last_write(real_redis, QUIET, older)
        next(
            iter(writer._conns.values())
        ).disconnect()  # as a pool does to its idle connections when the primary moves

        def rewritten() -> Any:
            conn.last_heard = time.monotonic()  # the connection keeps talking, the value never changes
            record = stored(real_redis, QUIET)
            return record if record["update_id"] == 2 else None

        record = wait_until(rewritten, 3, what="the full rewrite")
        assert record["voucher"] == voucher_key(f"{RUN}.1", conn.id, key_tag(QUIET))
        assert served(real_redis, QUIET)["update_id"] == 2
        assert writer.generation == 1
        # The old generation's voucher is no longer renewed: what named it dies with it.
        wait_until(
            lambda: not real_redis.exists(voucher_key(RUN, conn.id, key_tag(QUIET))), TTL_MS / 1000 + 1
        )
    finally:
        writer.stop()


@pytest.mark.redis
def test_after_a_failed_write_a_record_left_from_before_is_never_served(
    book: Book, real_redis: redis.Redis
) -> None:
    """A record the rewrite does not reach (the book let go of its key meanwhile) names the old
    generation's voucher, which nobody renews: it stops being served within the voucher's TTL."""
    writer = start_writer(book, real_redis)
    try:
        conn = Conn(time.monotonic())
        on(book, conn)
        book.on_frame(conn, QUIET, 1, fields("1.0", 1), time.monotonic())
        old = wait_until(lambda: stored(real_redis, QUIET), 2)
        leftover = snapshot_key("bookticker", "leftover")
        real_redis.set(leftover, orjson.dumps(old), px=RECORD_TTL_MS)
        real_redis.client_kill_filter(_type="normal", skipme=True)  # the next write fails
        started = time.monotonic()

        def both() -> bool:
            conn.last_heard = time.monotonic()
            return served(real_redis, leftover) is None and served(real_redis, QUIET) is not None

        wait_until(both, 3, what="the leftover to go, the value to stay")
        assert time.monotonic() - started < TTL_MS / 1000 + 0.5
        assert stored(real_redis, QUIET)["voucher"] == voucher_key(f"{RUN}.1", conn.id, key_tag(QUIET))
        assert writer.errors == 1
    finally:
        writer.stop()


def test_a_long_batch_goes_in_scripts_redis_answers_others_between(
    book: Book, any_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stall leaves hundreds of records for one batch; a script runs whole, with every reader of
    # Redis waiting: no script takes more than SCRIPT_KEYS keys, and every record lands.
    writer = Writer(book, any_redis, ttl_ms=TTL_MS, refresh_interval_s=TTL_MS / 3000, messenger_id=RUN)
    conn = Conn(time.monotonic())
    keys = [snapshot_key("bookticker", f"sym{i}usdt") for i in range(2 * SCRIPT_KEYS + 5)]
    book.assign(conn, keys)
    book.carry(conn, keys, 0.0)
    for i, key in enumerate(keys):
        book.on_frame(
            conn, key, i + 1, {"symbol": key, "bid_price": f"{i}.5", "update_id": i + 1}, time.monotonic()
        )
    sent: list[list[bytes]] = []  # each round trip's commands (the first is sent again after NOSCRIPT)
    send = writer._send

    def spy(commands: list[bytes], *args: Any) -> list[Any]:
        sent.append(commands)
        return send(commands, *args)

    monkeypatch.setattr(writer, "_send", spy)
    writer.write(book.take(time.monotonic(), None, everything=True, announce=True))
    scripts = [c for c in sent[-1] if b"EVALSHA" in c]
    keys_each = [int(c.split(b"\r\n")[6]) for c in scripts]  # *n, $7, EVALSHA, $40, sha, $k, k
    assert keys_each == [SCRIPT_KEYS, SCRIPT_KEYS, 5]
    assert [served(any_redis, key)["bid_price"] for key in keys] == [f"{i}.5" for i in range(len(keys))]
    assert writer.replaced == len(keys)
