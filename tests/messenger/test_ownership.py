"""Rendezvous hashing: every member computes the same owners; streams spread evenly and move
as little as possible when a member joins or leaves."""

from __future__ import annotations

from collections import Counter

from messenger.ownership import owners, owns

STREAMS = [f"transmute:bookticker:s{i}usdt" for i in range(3000)]
MEMBERS = ["a1b2c3d4", "0f9e8d7c", "5a5a5a5a"]


def test_the_owners_do_not_depend_on_the_order_the_members_are_listed_in() -> None:
    for stream in STREAMS[:100]:
        assert owners(stream, MEMBERS, 2) == owners(stream, list(reversed(MEMBERS)), 2)


def test_each_stream_has_exactly_replicas_distinct_owners_or_every_member_if_fewer() -> None:
    for replicas in (1, 2, 3, 5):
        for stream in STREAMS[:200]:
            found = owners(stream, MEMBERS, replicas)
            assert len(found) == len(set(found)) == min(replicas, len(MEMBERS))
            assert all(owns(m, stream, MEMBERS, replicas) for m in found)
    assert owners(STREAMS[0], [], 1) == []


def test_streams_spread_evenly_over_the_members() -> None:
    for replicas in (1, 2):
        load = Counter(m for s in STREAMS for m in owners(s, MEMBERS, replicas))
        share = len(STREAMS) * replicas / len(MEMBERS)
        assert all(abs(n - share) < 0.1 * share for n in load.values()), load


def test_a_member_joining_takes_only_its_share_and_nothing_moves_between_the_others() -> None:
    before = {s: owners(s, MEMBERS, 1)[0] for s in STREAMS}
    after = {s: owners(s, [*MEMBERS, "77777777"], 1)[0] for s in STREAMS}
    moved = [s for s in STREAMS if before[s] != after[s]]
    assert all(after[s] == "77777777" for s in moved)
    assert abs(len(moved) - len(STREAMS) / 4) < 0.1 * len(STREAMS) / 4


def test_a_member_leaving_gives_up_only_its_own_streams_with_replicas_too() -> None:
    for replicas in (1, 2):
        before = {s: set(owners(s, MEMBERS, replicas)) for s in STREAMS}
        after = {s: set(owners(s, MEMBERS[1:], replicas)) for s in STREAMS}
        for stream in STREAMS:
            kept = before[stream] - {MEMBERS[0]}
            assert kept <= after[stream]  # no surviving owner lets go
            if MEMBERS[0] not in before[stream]:
                assert after[stream] == before[stream]
