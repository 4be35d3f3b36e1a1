"""Membership in Redis: members see each other, a leaving one owns nothing, a silent one is
dropped after the liveness timeout, and the server reads stream states over every member."""

from __future__ import annotations

import time

import redis

from contract.keys import LIVE, MEMBERS_KEY, PENDING, member_streams_key, snapshot_key
from contract.members import StreamStates, live_members
from messenger.membership import Membership
from messenger.writer import records_start

WANTS = {"symbols": ["BTCUSDT"], "all": False, "kinds": ["bookTicker"]}


def member(client: redis.Redis, name: str, liveness_ms: int = 60_000) -> Membership:
    return Membership(client, name, liveness_ms, 0.05, WANTS, records_start(name))


def test_members_see_each_other_and_a_leaving_one_owns_nothing(any_redis: redis.Redis) -> None:
    a, b = member(any_redis, "aaaa"), member(any_redis, "bbbb")
    a.round()
    b.round()
    a.round()
    assert list(a.live) == list(b.live) == list(a.eligible) == ["aaaa", "bbbb"]
    assert a.wants == {"aaaa": WANTS, "bbbb": WANTS}
    b.leave()
    assert list(b.eligible) == ["aaaa"]
    b.round()
    a.round()
    assert (list(a.live), list(a.eligible)) == (["aaaa", "bbbb"], ["aaaa"])
    b._deregister()
    a.round()
    assert list(a.live) == list(a.eligible) == ["aaaa"]
    assert live_members(any_redis) == ["aaaa"]


def test_a_member_that_stops_renewing_is_dropped_after_the_liveness_timeout(any_redis: redis.Redis) -> None:
    a, b = member(any_redis, "aaaa"), member(any_redis, "bbbb", liveness_ms=300)
    b.round()
    a.round()
    assert list(a.eligible) == ["aaaa", "bbbb"]
    time.sleep(0.35)
    a.round()
    assert list(a.eligible) == ["aaaa"]


def test_a_stream_is_handed_over_once_another_member_reports_it_live_and_taken_once_it_wrote_it(
    any_redis: redis.Redis,
) -> None:
    key = snapshot_key("bookticker", "btcusdt")
    a, b = member(any_redis, "aaaa"), member(any_redis, "bbbb")
    b.round()
    a.asked = frozenset({key})
    a.round()
    assert a.handed_over == frozenset()
    any_redis.hset(member_streams_key("bbbb"), key, LIVE)
    any_redis.set(key, records_start("aaaa") + ':1","bid_price":"1"}')
    a.round()
    assert a.handed_over == {key}
    a.muted = {key: time.monotonic() - 1}
    a.round()
    assert a.taken == frozenset()  # the record is still ours: letting go would delete it
    any_redis.set(key, records_start("aaaa") + '.2:1","bid_price":"1"}')  # a later generation of ours
    a.round()
    assert a.taken == frozenset()
    # The new owner's voucher joined ours (the same value, contract.records): it vouches too.
    any_redis.set(key, records_start("aaaa") + ':1 transmute:voucher:bbbb:1","bid_price":"1"}')
    a.round()
    assert a.taken == {key}
    any_redis.set(key, records_start("bbbb") + ':1","bid_price":"1"}')
    a.round()
    assert a.taken == {key}


def test_the_server_reads_a_stream_as_live_if_any_member_says_so(any_redis: redis.Redis) -> None:
    key, other = snapshot_key("bookticker", "btcusdt"), snapshot_key("bookticker", "ethbtc")
    future = int(time.time() * 1000) + 60_000
    any_redis.zadd(MEMBERS_KEY, {"aaaa": future, "bbbb": future})
    any_redis.hset(member_streams_key("aaaa"), mapping={key: PENDING, other: PENDING})
    any_redis.hset(member_streams_key("bbbb"), key, LIVE)
    any_redis.hset(member_streams_key("cccc"), snapshot_key("bookticker", "bnbbtc"), LIVE)  # not a member
    states = StreamStates(any_redis)
    assert states.states([key, other, snapshot_key("bookticker", "bnbbtc")]) == [b"live", b"pending", None]
    assert sorted(states.streamed("transmute:bookticker:")) == [key, other]
