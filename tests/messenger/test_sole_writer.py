"""The sole writer (messenger.sole_writer): a messenger that writes alone writes plain SETs, and the
fence stops them the moment another messenger starts writing, whatever the interleaving.

The adversary's case is a second messenger that is ahead: its newer value, under a live voucher,
must never be overwritten by the first one's older plain SET. Each member is a Book and a Writer
of its own (tests.messenger.test_conditional_writes.Member), on a real redis-server; the tests
drive their batches one by one and read what Redis holds after each.
"""

from __future__ import annotations

import re
import time

import pytest
import redis

from contract.keys import RECORD_TTL_MS, VOUCHER_PREFIX, WRITERS_JOINED_KEY, WRITERS_KEY
from tests.messenger.test_conditional_writes import QUIET, TICKER, Member, served, stored, ticker

pytestmark = pytest.mark.redis


def test_a_messenger_alone_writes_plain_sets_after_its_first_batch(real_redis: redis.Redis) -> None:
    """The first batch goes through the script (nothing is known yet); the next ones are plain
    SETs, with the records' TTL, servable, and the run registered until its vouchers' TTL."""
    a = Member(real_redis, "aaaa0101")
    a.frame(TICKER, 1, ticker(1))
    a.flush()
    assert a.writer.sole_writes == 0
    for u in range(2, 6):
        a.frame(TICKER, u, ticker(u))
        a.frame(QUIET, u, ticker(u))
        a.flush()
        assert stored(real_redis, TICKER)["update_id"] == u
        assert served(real_redis, TICKER) is not None
    assert a.writer.sole_writes == 8
    assert RECORD_TTL_MS - 1000 < real_redis.pttl(TICKER) <= RECORD_TTL_MS
    until = int(real_redis.hget(WRITERS_KEY, a.run) or 0)
    assert 0 < until - time.time() * 1000 <= 2000 + 50  # the vouchers' TTL (TTL_MS), on Redis's clock


def test_a_newer_value_of_a_messenger_that_joins_is_never_overwritten_by_a_plain_set(
    real_redis: redis.Redis,
) -> None:
    """B starts between A's question and A's next batch, and is ahead: A's plain SETs are refused
    by EXEC and go through the script, which keeps B's newer value (with both vouchers)."""
    a = Member(real_redis, "aaaa0102")
    for u in (1, 2):
        a.frame(TICKER, u, ticker(u))
        a.flush()
    assert a.writer.sole_writes == 1  # A writes alone, and its next batch would be plain SETs
    b = Member(real_redis, "bbbb0102")
    b.frame(TICKER, 20, ticker(20))
    b.flush()
    assert stored(real_redis, TICKER)["update_id"] == 20
    a.frame(TICKER, 3, ticker(3))
    a.flush()
    assert a.writer.sole_refused == 1
    record = stored(real_redis, TICKER)
    assert record["update_id"] == 20  # never back to A's 3
    assert set(record["voucher"].split()) == {a.voucher, b.voucher}
    a.frame(TICKER, 4, ticker(4))  # and from now on, neither writes alone
    a.flush()
    b.frame(TICKER, 21, ticker(21))
    b.flush()
    assert stored(real_redis, TICKER)["update_id"] == 21
    assert a.writer.sole_refused == 1 and a.writer.sole_writes == 1 and b.writer.sole_writes == 0


def test_a_messenger_that_sees_another_registered_never_writes_alone(real_redis: redis.Redis) -> None:
    """B registered before A asked: A's answer is no, whoever writes first."""
    a, b = Member(real_redis, "aaaa0103"), Member(real_redis, "bbbb0103")
    b.frame(TICKER, 20, ticker(20))
    b.flush()
    for u in range(1, 5):
        a.frame(TICKER, u, ticker(u))
        a.flush()
        assert stored(real_redis, TICKER)["update_id"] == 20
    assert a.writer.sole_writes == 0 and a.writer.sole_refused == 0


def test_a_messenger_back_from_a_stall_fences_the_one_that_wrote_alone_meanwhile(
    real_redis: redis.Redis,
) -> None:
    """B stalls past its vouchers' TTL: A, alone now, writes plain SETs. B comes back ahead: its
    registration bumps the counter, so A's next plain SETs are refused and B's value stays."""
    a, b = Member(real_redis, "aaaa0104"), Member(real_redis, "bbbb0104")
    for m in (a, b):
        m.frame(TICKER, 1, ticker(1))
        m.flush()
    joined = int(real_redis.get(WRITERS_JOINED_KEY) or 0)
    deadline = time.monotonic() + 10
    u = 1
    while a.writer.sole_writes == 0:  # B silent: A keeps writing until B's entry expires
        assert time.monotonic() < deadline, "A never wrote alone after B went silent"
        u += 1
        a.frame(TICKER, u, ticker(u))
        a.flush()
        time.sleep(0.05)
    refused = a.writer.sole_refused  # once already: A asked before B's first batch
    b.conn.last_heard = time.monotonic()
    b.frame(TICKER, 1000, ticker(1000))
    b.flush()
    assert int(real_redis.get(WRITERS_JOINED_KEY) or 0) == joined + 1
    a.frame(TICKER, u + 1, ticker(u + 1))
    a.flush()
    assert a.writer.sole_refused == refused + 1
    assert stored(real_redis, TICKER)["update_id"] == 1000


def test_plain_sets_are_never_sent_on_a_connection_made_since_the_question(real_redis: redis.Redis) -> None:
    """The WATCH is per connection: once A's connection is gone, A's next batch does not EXEC on a
    new one (that EXEC would be unfenced); everything is rewritten through the script instead."""
    a = Member(real_redis, "aaaa0105")
    for u in (1, 2):
        a.frame(TICKER, u, ticker(u))
        a.flush()
    real_redis.client_kill_filter(_type="normal", skipme=True)  # A's connection among them
    b = Member(real_redis, "bbbb0105")
    b.frame(TICKER, 20, ticker(20))
    b.flush()
    a.frame(TICKER, 3, ticker(3))
    with pytest.raises(redis.ConnectionError):
        a.flush()  # a ConnectionError, as the run loop sees: the old connection is dead, a new one unfenced
    assert stored(real_redis, TICKER)["update_id"] == 20
    a.writer._failed(redis.ConnectionError("test"))  # what the run loop does: then everything
    batch = a.book.take(time.monotonic(), None, everything=True, announce=True)
    a.writer.write(batch)
    assert stored(real_redis, TICKER)["update_id"] == 20
    assert a.writer.sole_writes == 1 and a.writer.sole_refused == 0


def test_no_state_redis_passes_through_holds_a_voucher_its_writers_entry_does_not_cover(
    real_redis: redis.Redis,
) -> None:
    """What a replica promoted by a failover holds is some prefix of what the primary ran, cut
    between two commands (a script's effects travel as one unit). So a voucher must never be written
    outside the script that registers its run, and that script must renew the entry after writing
    it, to at least as long: read from what Redis ran (MONITOR), not from what the writer meant."""
    with real_redis.monitor() as monitor:  # type: ignore[no-untyped-call]
        a, b = Member(real_redis, "aaaa0106"), Member(real_redis, "bbbb0106")
        for u in range(1, 4):
            a.frame(TICKER, u, ticker(u))
            a.frame(QUIET, u, ticker(u))
            a.flush()
        b.frame(TICKER, 10, ticker(10))
        b.flush()
        a.frame(TICKER, 11, ticker(11))
        a.flush()
        real_redis.echo("end of the test")
        lines: list[bytes] = []
        while not lines or b'"ECHO"' not in lines[-1]:
            lines.append(monitor.connection.read_response())
    ran = [_monitored(line) for line in lines]
    vouchers = 0
    pending: dict[str, int] = {}  # run -> the latest voucher expiry its entry must still cover
    for at_ms, lua, args in ran:
        if not lua:  # a new command from a client: what came before it may be all a replica has
            assert not pending, f"a voucher outlives its run's entry between commands: {pending}"
        name = args[0].upper()
        if name == "SET" and args[1].startswith(VOUCHER_PREFIX):
            assert lua, f"a voucher written outside the script that registers its run: {args}"
            run = args[1][len(VOUCHER_PREFIX) :].split(":")[0].split(".")[0]
            pending[run] = max(pending.get(run, 0), int(at_ms) + int(args[args.index("PX") + 1]))
            vouchers += 1
        elif name == "HSET" and args[1] == WRITERS_KEY and int(args[3]) >= pending.get(args[2], 1 << 62):
            del pending[args[2]]  # the run's entry covers its vouchers again
    assert not pending
    assert vouchers >= 3  # A's two buckets, then B's


def _monitored(line: bytes) -> tuple[float, bool, list[str]]:
    """One MONITOR line: when (epoch ms), whether a script ran it, and its arguments."""
    text = line.decode()
    at, rest = text.split(" ", 1)
    source = rest[1 : rest.index("]")]
    args = [re.sub(r"\\(.)", r"\1", arg) for arg in re.findall(r'"((?:[^"\\]|\\.)*)"', rest)]
    return float(at) * 1000, source.endswith(" lua"), args
