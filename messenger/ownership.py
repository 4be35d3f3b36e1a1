"""Which members own a stream: rendezvous (highest random weight) hashing.

Each member weighs every (member, stream) pair with the same hash and takes the streams it
weighs highest for, so all members agree without talking to each other, the streams spread
evenly, and when a member joins or leaves only the streams it wins or held move (about 1/N).
A pure function of its inputs.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

# Owners found once for each set of members: the messenger asks for every stream it plans, every
# second (messenger.service), and hashing 2,000 streams afresh took ~5 ms of the one GIL each time.
OWNERS_CACHED = 65536


def weight(member: str, stream: str) -> int:
    """The pair's weight: the same on every member and in every process (no salted hash())."""
    digest = hashlib.blake2b(f"{member}\0{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owners(stream: str, members: Iterable[str], replicas: int) -> list[str]:
    """The ``replicas`` members that own ``stream`` (all of them if there are fewer), best first."""
    return list(_owners(stream, tuple(members), replicas))


@functools.lru_cache(maxsize=OWNERS_CACHED)
def _owners(stream: str, members: tuple[str, ...], replicas: int) -> tuple[str, ...]:
    ranked = sorted(members, key=lambda m: (weight(m, stream), m), reverse=True)
    return tuple(ranked[:replicas])


def owns(member: str, stream: str, members: Iterable[str], replicas: int) -> bool:
    """Whether ``member`` is among the owners of ``stream``."""
    return member in _owners(stream, tuple(members), replicas)
