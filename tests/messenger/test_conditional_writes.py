"""Two messengers writing the same keys (messenger.conditional): a value never goes back, a key
vouched for by both stays servable when one dies, and only the last one withdrawing deletes it.

Each messenger is a Book and a Writer of its own (its own run id), as in two processes; the tests
drive their writes batch by batch, so that what Redis holds can be checked after each one.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import orjson
import pytest
import redis

from contract.keys import RECORD_TTL_MS, key_tag, snapshot_key, voucher_key, voucher_prefix
from contract.ordering import encode_order
from contract.records import vouchers
from contract.servable import CurrentReader, pairs, servable
from messenger.book import Book
from messenger.conditional import MGET_CHUNK, PREFETCH_BYTES, SCRIPT, STAGE_BYTES, ScriptBatch
from messenger.writer import Writer
from tests.messenger.test_book import Conn
from tests.processes import RedisServer, wait_until

logger = logging.getLogger(__name__)

TTL_MS = 2000
TICKER = snapshot_key("bookticker", "btcusdt")
QUIET = snapshot_key("bookticker", "bnbbtc")
CANDLE = snapshot_key("kline_1m", "btcusdt")
KEYS = [TICKER, QUIET, CANDLE]


class Member:
    """One messenger: its book, one connection carrying every key, and its writer."""

    def __init__(self, client: redis.Redis, run: str, watched: frozenset[str] = frozenset()) -> None:
        self.run = run
        self.book = Book(liveness_timeout_s=60.0)
        self.conn = Conn(time.monotonic())
        self.writer = Writer(self.book, client, TTL_MS, TTL_MS / 3000, run, watched=lambda: watched)
        self.carry(self.conn)

    def carry(self, conn: Conn) -> None:
        self.book.assign(conn, KEYS)
        self.book.carry(conn, KEYS, 0.0)

    @property
    def voucher(self) -> str:
        """This member's voucher in TICKER's bucket (CANDLE and QUIET are in their own)."""
        return self.voucher_for(TICKER)

    def voucher_for(self, key: str) -> str:
        """This member's voucher in ``key``'s bucket."""
        return voucher_key(self.run, self.conn.id, key_tag(key))

    def frame(self, key: str, order: Any, fields: dict[str, Any], conn: Conn | None = None) -> None:
        conn = conn or self.conn
        conn.last_heard = time.monotonic()
        self.book.on_frame(conn, key, order, fields, time.monotonic())

    def flush(self) -> None:
        """Write what changed, as the writer's next batch (one round trip)."""
        now = time.monotonic()
        # The first batch on the writer's new connection rewrites everything, as its run loop does.
        batch = self.book.take(now, None, everything=self.writer.batches == 0, announce=True)
        if batch:
            self.writer.write(batch)


@pytest.fixture
def members(any_redis: redis.Redis) -> tuple[Member, Member]:
    return Member(any_redis, "aaaa0001"), Member(any_redis, "bbbb0002")


def stored(client: redis.Redis, key: str) -> Any:
    raw = client.get(key)
    return None if raw is None else orjson.loads(raw)


def served(client: redis.Redis, key: str) -> Any:
    [pair] = pairs(CurrentReader(client)([key]))
    return servable(*pair)


def ticker(u: int) -> dict[str, Any]:
    return {"symbol": "BTCUSDT", "bid_price": f"{u}.0", "update_id": u}


def candle(open_ms: int, event_ms: int, trades: int, closed: bool) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "open_time": open_ms,
        "event_time": event_ms,
        "trades": trades,
        "closed": closed,
    }


def kline_order(record: dict[str, Any]) -> tuple[int, int, int]:
    return record["open_time"], record["event_time"], record["trades"]


def candles(n: int) -> list[tuple[tuple[int, int, int], dict[str, Any]]]:
    """A kline stream: a few updates per minute, the last of each minute closed."""
    out = []
    event = 1_000
    for minute in range(n):
        open_ms = minute * 60_000
        for i in range(4):
            event += 500
            closed = i == 3
            out.append(((open_ms, event, i + 1), candle(open_ms, event, i + 1, closed)))
    return out


# Records small enough to be read by the batch's MGET, too large for it (their heads read by
# GETRANGE), and large enough to be staged.
@pytest.mark.parametrize(("rounds", "pad"), [(400, 0), (150, PREFETCH_BYTES), (150, STAGE_BYTES)])
def test_two_messengers_interleaving_old_and_new_updates_never_take_a_value_back(
    members: tuple[Member, Member], any_redis: redis.Redis, rounds: int, pad: int
) -> None:
    """Both carry the same streams, each at its own pace: one is often behind the other, so many
    of its writes are older than what is stored. After every batch, each key holds the newest
    value either wrote, a watched key's channel has published each value that replaced the stored
    one in order (every closed candle once), and a value both wrote names both vouchers. With
    ``pad``, every record is large (staged, then renamed into place)."""
    seed = time.time_ns()
    logger.info("seed %d", seed)
    rng = random.Random(seed)
    a, b = members
    for m in members:
        m.writer.watched = lambda: frozenset({CANDLE})
    watcher = any_redis.pubsub(ignore_subscribe_messages=True)
    watcher.subscribe(CANDLE)
    streams: dict[str, list[tuple[Any, dict[str, Any]]]] = {
        TICKER: [(u, ticker(u)) for u in range(1, rounds)],
        QUIET: [(u, ticker(u)) for u in range(1, rounds // 20)],
        CANDLE: candles(rounds // 8),
    }
    for stream in streams.values():
        for _, fields in stream:
            fields["pad"] = "x" * pad
    at = {(m.run, key): 0 for m in members for key in streams}  # how far each has read each stream
    newest: dict[str, Any] = {}  # the newest order written so far, by either
    published: list[tuple[int, int, int]] = []
    for step in range(rounds):
        m = rng.choice(members)
        for key, stream in streams.items():
            for _ in range(rng.choice((0, 0, 1, 1, 2, 5))):
                i = at[m.run, key]
                if i < len(stream):
                    m.frame(key, *stream[i])
                    at[m.run, key] = i + 1
        if rng.random() < 0.6:
            continue  # frames gather: the next batch takes only the latest of each key
        taken = {k: m.book._entries[k].order for k in streams if k in m.book._dirty}
        m.flush()
        for key, order in taken.items():
            newest[key] = order if key not in newest else max(newest[key], order)
        for key, want in newest.items():
            record = stored(any_redis, key)
            order = kline_order(record) if key == CANDLE else record["update_id"]
            assert order == want, (seed, step, key)
            assert record["order"] == encode_order(order)
            assert served(any_redis, key) is not None
        while (message := watcher.get_message(timeout=0.01)) is not None:
            published.append(kline_order(orjson.loads(message["data"])))
    for m in members:  # both catch up to the end: each last value is vouched for by both
        for key, stream in streams.items():
            for frame in stream[at[m.run, key] :]:
                m.frame(key, *frame)
        m.flush()
    for key, stream in streams.items():
        record = stored(any_redis, key)
        assert record["order"] == encode_order(stream[-1][0])
        assert sorted(vouchers(record["voucher"])) == [a.voucher_for(key), b.voucher_for(key)]
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and (not published or published[-1] != streams[CANDLE][-1][0]):
        if (message := watcher.get_message(timeout=0.05)) is not None:
            published.append(kline_order(orjson.loads(message["data"])))
    watcher.close()
    assert published == sorted(set(published)), seed  # never back, never twice
    closed = [order for order, fields in streams[CANDLE] if fields["closed"]]
    assert set(closed) <= set(published), seed
    assert a.writer.joined + b.writer.joined > 0
    assert not any_redis.keys("transmute:staged:*")  # each staged record was renamed or dropped


def test_a_key_both_vouch_for_stays_servable_when_one_dies(
    members: tuple[Member, Member], any_redis: redis.Redis
) -> None:
    """SIGKILL of one messenger: its vouchers' keys lapse, the other's keep the value served."""
    a, b = members
    for m in members:
        m.frame(TICKER, 7, ticker(7))
        m.flush()
    assert sorted(vouchers(stored(any_redis, TICKER)["voucher"])) == [a.voucher, b.voucher]
    heard_a = int(time.time() * 1000) + 50
    any_redis.set(a.voucher, heard_a)  # a spoke last: as_of is the latest live word
    assert served(any_redis, TICKER)["as_of"] == heard_a
    any_redis.delete(a.voucher)  # a is killed: its liveness lapses, nothing else is done
    value = served(any_redis, TICKER)
    assert value is not None and value["update_id"] == 7
    assert value["as_of"] < heard_a
    any_redis.delete(b.voucher)
    assert served(any_redis, TICKER) is None


def test_one_withdrawing_leaves_the_others_value_and_the_last_one_deletes_it(
    members: tuple[Member, Member], any_redis: redis.Redis
) -> None:
    a, b = members
    for m in members:
        m.writer.watched = lambda: frozenset({TICKER})
    watcher = any_redis.pubsub(ignore_subscribe_messages=True)
    watcher.subscribe(TICKER)
    a.frame(TICKER, 7, ticker(7))
    a.flush()
    b.frame(TICKER, 6, ticker(6))  # behind a: its value is older, but its voucher joins
    b.flush()
    assert stored(any_redis, TICKER)["update_id"] == 7
    assert sorted(vouchers(stored(any_redis, TICKER)["voucher"])) == [a.voucher, b.voucher]
    b.book.release(b.conn)  # b stops carrying it (or stops): its voucher is withdrawn
    b.flush()
    record = stored(any_redis, TICKER)
    assert record["update_id"] == 7 and vouchers(record["voucher"]) == [a.voucher]
    assert served(any_redis, TICKER)["update_id"] == 7
    assert any_redis.pttl(TICKER) > TTL_MS  # the record keeps its TTL
    a.book.release(a.conn)
    a.flush()
    assert not any_redis.exists(TICKER)
    messages: list[bytes] = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and (not messages or messages[-1] != b""):
        if (message := watcher.get_message(timeout=0.05)) is not None:
            messages.append(message["data"])
    watcher.close()
    assert [orjson.loads(m)["update_id"] if m else None for m in messages] == [7, None]  # one removal


def test_a_withdrawal_deletes_what_only_dead_messengers_vouch_for(
    members: tuple[Member, Member], any_redis: redis.Redis
) -> None:
    a, b = members
    for m in members:
        m.frame(TICKER, 7, ticker(7))
        m.flush()
    any_redis.delete(a.voucher)  # a died without a word
    b.book.release(b.conn)
    b.flush()
    assert not any_redis.exists(TICKER)


def test_a_seed_without_an_order_joins_a_live_value_and_replaces_a_dead_one(
    members: tuple[Member, Member], any_redis: redis.Redis
) -> None:
    a, b = members
    a.frame(TICKER, 7, ticker(7))
    a.flush()
    seed = {"symbol": "BTCUSDT", "bid_price": "9.0", "update_id": None}
    assert b.book.seed(b.conn, TICKER, seed, 0.0, time.monotonic())
    b.flush()
    record = stored(any_redis, TICKER)
    assert record["bid_price"] == "7.0"  # a's streamed value is current: REST does not replace it
    assert sorted(vouchers(record["voucher"])) == [a.voucher, b.voucher]
    any_redis.delete(a.voucher)  # a died: a seed of another connection of b's is written
    late = Conn(time.monotonic())
    b.carry(late)
    b.book.release(b.conn)
    b.conn = late
    assert b.book.seed(late, TICKER, seed, time.monotonic(), time.monotonic())
    b.flush()
    record = stored(any_redis, TICKER)
    assert (record["bid_price"], record["order"], record["source"]) == ("9.0", "", "rest")
    assert vouchers(record["voucher"]) == [b.voucher]
    a.frame(TICKER, 8, ticker(8))  # a streamed value replaces a seed without an order
    a.flush()
    assert stored(any_redis, TICKER)["bid_price"] == "8.0"


def test_a_messenger_keeps_one_voucher_in_a_record(
    members: tuple[Member, Member], any_redis: redis.Redis
) -> None:
    """When another of its connections takes a key over, that one's voucher replaces the first's."""
    a, b = members
    for m in members:
        m.frame(TICKER, 7, ticker(7))
        m.flush()
    first = a.voucher
    second = Conn(time.monotonic())
    a.carry(second)
    a.frame(TICKER, 7, ticker(7), conn=second)  # second vouches too (the same update)
    a.book.release(a.conn, [TICKER])  # first lets go of it, though it lives on (other keys)
    a.conn = second
    a.flush()
    named = vouchers(stored(any_redis, TICKER)["voucher"])
    assert sorted(named) == sorted([b.voucher, voucher_key(a.run, second.id, key_tag(TICKER))])
    assert first not in named


@pytest.mark.redis
def test_a_script_redis_forgot_is_loaded_again(real_redis: redis.Redis) -> None:
    a = Member(real_redis, "aaaa0005")
    a.writer.alone = lambda: False  # through the script every time (messenger.sole_writer)
    a.frame(TICKER, 7, ticker(7))
    a.flush()
    real_redis.script_flush()  # as after a restart
    a.frame(TICKER, 8, ticker(8))
    a.flush()
    assert stored(real_redis, TICKER)["update_id"] == 8
    assert RECORD_TTL_MS - 1000 < real_redis.pttl(TICKER) <= RECORD_TTL_MS


@pytest.mark.redis
def test_running_writers_stopping_one_by_one(real_redis: redis.Redis, redis_server: RedisServer) -> None:
    """The stop path of two running messengers: the first to stop leaves what the other vouches
    for; the last deletes it."""
    a, b = Member(redis_server.client(), "aaaa0003"), Member(redis_server.client(), "bbbb0004")
    for m in (a, b):
        m.writer.start()
    try:
        for m in (a, b):
            m.frame(QUIET, 3, ticker(3))
        wait_until(lambda: len(vouchers((stored(real_redis, QUIET) or {}).get("voucher", ""))) == 2, 2)
        a.book.release(a.conn)  # a stops: the supervisor lets go of its connections, then its writer
        a.writer.stop()
        assert served(real_redis, QUIET)["update_id"] == 3
        b.book.release(b.conn)
        b.writer.stop()
        assert not real_redis.exists(QUIET)
    finally:
        for m in (a, b):
            m.writer.stop()


def test_a_leftover_no_live_member_vouches_for_is_replaced_whatever_its_order(
    any_redis: redis.Redis,
) -> None:
    """A record left by a run that stopped (or by an exchange whose ids went back) with a higher
    order than anything now sent must not block the new values, nor be vouched for by them."""
    gone, now = Member(any_redis, "dead0001"), Member(any_redis, "live0002")
    gone.frame(KEYS[0], 900, {"symbol": "BTCUSDT", "bid_price": "9.0"})
    gone.flush()
    any_redis.delete(gone.voucher)  # that run is gone: its voucher expired
    now.frame(KEYS[0], 5, {"symbol": "BTCUSDT", "bid_price": "1.0"})
    now.flush()
    record = served(any_redis, KEYS[0])
    assert record is not None and record["bid_price"] == "1.0"


def _record(voucher: str, order: int, **fields: Any) -> bytes:
    return orjson.dumps({"voucher": voucher, "order": encode_order(order), **fields})


def _run(client: redis.Redis, batch: ScriptBatch) -> Any:
    conn = client.connection_pool.get_connection()
    try:
        conn.send_packed_command([batch.command()])
        return conn.read_response()
    finally:
        client.connection_pool.release(conn)


def test_a_key_written_twice_in_one_batch_ends_as_if_written_in_two(any_redis: redis.Redis) -> None:
    """The script reads what is stored before it writes (small records: one MGET for the whole
    batch); a key's second write in a batch is judged against the first one's result, not against
    that earlier read: the batch ends as the same two writes in two batches do. (Another member
    vouches for the stored value; this one replaces it, then writes an older one.)"""
    any_redis.script_load(SCRIPT)
    theirs, mine = voucher_key("bbbb0002", 1, "{0}"), voucher_key("aaaa0001", 1, "{0}")
    any_redis.set(theirs, 1, px=TTL_MS)
    any_redis.set(mine, 1, px=TTL_MS)
    prefix = voucher_prefix("aaaa0001")
    results = []
    for together in (True, False):
        any_redis.set(TICKER, _record(theirs, 5, u=5))
        batch = ScriptBatch(RECORD_TTL_MS, prefix)
        batch.write(TICKER.encode(), _record(mine, 7, u=7), False)
        if not together:
            _run(any_redis, batch)
            batch = ScriptBatch(RECORD_TTL_MS, prefix)
        batch.write(TICKER.encode(), _record(mine, 4, u=4), False)
        _run(any_redis, batch)
        results.append(stored(any_redis, TICKER))
    assert results[0] == results[1]


def test_a_batch_of_more_small_records_than_one_read_takes_writes_each_by_its_order(
    real_redis: redis.Redis,
) -> None:
    """More keys than one MGET reads (MGET_CHUNK): every key is judged by its own stored record."""
    real_redis.script_load(SCRIPT)
    theirs, mine = voucher_key("bbbb0002", 1, "{0}"), voucher_key("aaaa0001", 1, "{0}")
    real_redis.set(theirs, 1, px=TTL_MS)
    real_redis.set(mine, 1, px=TTL_MS)
    n = MGET_CHUNK * 2 + 7
    keys = [f"transmute:bookticker:s{i}usdt" for i in range(n)]
    for i, key in enumerate(keys):  # another member's; odd keys newer than what the batch brings
        real_redis.set(key, _record(theirs, 10 if i % 2 else 1, u=i))
    batch = ScriptBatch(RECORD_TTL_MS, voucher_prefix("aaaa0001"))
    for i, key in enumerate(keys):
        batch.write(key.encode(), _record(mine, 5, u=-i), False)
    assert _run(real_redis, batch) == [n - n // 2, n // 2, 0]
    for i, key in enumerate(keys):
        assert stored(real_redis, key)["u"] == (i if i % 2 else -i), key
