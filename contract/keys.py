"""The Redis key layout both processes agree on. Keys are built here and nowhere else.

Every key carries a hash tag (the part in braces: Redis Cluster places a key by it alone), so that
what is read or written together lands in one slot (README "Redis Cluster"):

- a symbol's keys end in its bucket's tag, ``:{0}`` to ``:{15}`` (``symbol_tag``): a record, the
  vouchers its writers name for that bucket, its kept candles and trades, a large record's staged
  copy. One script reads a record with its vouchers, or writes a bucket's records, in one slot;
  KEY_BUCKETS spreads the market over a cluster's primaries.
- the shared control keys (members, demand, symbols, ...) carry ``{control}``: one slot, so the
  scripts that read several of them together work in a cluster.

Written by the messenger (m) or the server (s):

| key | type | by | what |
|---|---|---|---|
| ``transmute:<kind>:<symbol>:{b}`` | string, TTL | m | the latest record (contract.records) |
| ``transmute:<kind>:<symbol>:{b}`` | channel | m | each new record of a watched key; empty: gone |
| ``transmute:history:<series>:<symbol>:{b}`` | sorted set, TTL | m | kept trades (trade_history) |
| ``transmute:backfilled:<series>:<symbol>:{b}`` | sorted set, TTL | m | older trades fetched on request |
| ``transmute:backfilled:<series>:<symbol>:{b}:origin`` | string, TTL | m | a trade list's first id |
| ``transmute:klines:<interval>:<symbol>:{b}...`` | sorted set, ... | m | kept candles (contract.klines) |
| ``transmute:voucher:<run>:<n>:{b}`` | string, TTL | m | a live connection's last word (ms), a bucket |
| ``transmute:staged:<run>:<key>`` | string, TTL | m | a large record on its way to ``<key>`` |
| ``transmute:{control}:backfill`` | sorted set + channel | s | history asked for (contract.backfill) |
| ``transmute:{control}:watched`` | sorted set | s | keys live-push clients follow, by expiry (ms) |
| ``transmute:{control}:members`` | sorted set | m | members (runs) scored by when presumed dead |
| ``transmute:{control}:writers`` | hash | m | run -> until when (ms) its vouchers may live (sole_writer) |
| ``transmute:{control}:writers:joined`` | string | m | bumped when a run starts writing, or comes back |
| ``transmute:{control}:leaving`` | sorted set | m | members stopping cleanly, scored alike |
| ``transmute:{control}:member:<member>`` | string, TTL | m | a member's heartbeat |
| ``transmute:{control}:streams:<member>`` | hash | m | snapshot key -> ``pending`` / ``live`` |
| ``transmute:{control}:wants`` | hash | m | member -> the streams it pins, JSON |
| ``transmute:{control}:symbols`` | hash | m | symbol -> status (TRADING, ...) |
| ``transmute:{control}:exchangeinfo`` | string | m | the last exchangeInfo document |
| ``transmute:{control}:demand`` | sorted set | s | ``<kind>:<SYMBOL>`` (or ``:*``) by last request |
| ``transmute:{control}:demand`` | channel | s | a demand was registered: look now |
| ``transmute:{control}:depth:wanted`` | sorted set | s | book tiers asked for (contract.order_book) |
| ``transmute:{control}:depth:unsynced`` | hash, TTL | m | why books have no record |
| ``transmute:{control}:client:<address>`` | hash, TTL | s | a client's budget of new streams |
| ``transmute:{control}:egress:<egress>:...`` | TTL | m | Binance budget: connections, weight, backoff |
"""

from __future__ import annotations

import zlib

# A symbol's keys are spread over this many buckets, each a hash tag of its own (``{0}``..``{15}``):
# enough for the slots of 3 primaries to get 4-6 each, few enough that a writer's batch is a few
# scripts and a connection vouches in a few buckets. Changing it moves every key: both processes
# must agree, so it is a constant, not a setting.
KEY_BUCKETS = 16
# The hash tag of every shared control key: one slot.
CONTROL_TAG = "{control}"
CONTROL_PREFIX = "transmute:" + CONTROL_TAG + ":"
# Records outlive their last write by this much at most: a bound on what a messenger that died
# leaves behind, not on freshness (that is the voucher's TTL). Renewed well before it runs out.
RECORD_TTL_MS = 600_000
# A live connection of one messenger run (an id of its own per start), in one bucket: written
# while the connection is heard from, with SNAPSHOT_TTL_MS. A record names the ones that vouch for
# it (contract.records.VOUCHER), in its own bucket, and is served only while one of those exists.
VOUCHER_PREFIX = "transmute:voucher:"
# A large record, written under ``transmute:staged:<run>:<key>`` by one messenger run just before
# its script renames it to its key (messenger.conditional): gone at once, unless the run died
# between the two (then RECORD_TTL_MS). The key's own tag places it in the key's slot.
STAGED_PREFIX = "transmute:staged:"
WATCHED_KEY = CONTROL_PREFIX + "watched"
# Every messenger run is a member (contract.members): registered here, scored by the time (epoch
# ms) it is presumed dead unless heard from again (LIVENESS_TIMEOUT_MS after its last word).
MEMBERS_KEY = CONTROL_PREFIX + "members"
# Every messenger run that writes, with until when (Redis's clock, epoch ms) its vouchers may live,
# and a counter bumped when one starts writing or comes back (messenger.sole_writer).
WRITERS_KEY = CONTROL_PREFIX + "writers"
WRITERS_JOINED_KEY = CONTROL_PREFIX + "writers:joined"
# Members stopping cleanly (scored the same): still carrying, but owning nothing any more.
LEAVING_KEY = CONTROL_PREFIX + "leaving"
# A member's heartbeat, written every refresh (a third of SNAPSHOT_TTL_MS) with the values' TTL:
# it is gone as soon as they are when the member dies, so /readyz says so as soon as /snapshot does.
MEMBER_KEY_PREFIX = CONTROL_PREFIX + "member:"
# What a member streams; only the hashes of live members count (contract.members).
MEMBER_STREAMS_KEY_PREFIX = CONTROL_PREFIX + "streams:"
# What each member pins, so that every member plans over the same wanted streams.
WANTS_KEY = CONTROL_PREFIX + "wants"
SYMBOLS_KEY = CONTROL_PREFIX + "symbols"
EXCHANGE_INFO_KEY = CONTROL_PREFIX + "exchangeinfo"
DEMAND_KEY = CONTROL_PREFIX + "demand"
DEMAND_CHANNEL = CONTROL_PREFIX + "demand"
# The symbol of a DEMAND_KEY member that asks for every trading symbol of its kind.
ALL_SYMBOLS = "*"
# A token bucket per client address (tokens, when last counted), for new on-demand streams.
CLIENT_BUDGET_KEY_PREFIX = CONTROL_PREFIX + "client:"
# One Binance budget per egress address (the EGRESS setting), shared by the messengers behind it
# (messenger.egress): connection attempts scored by time (ms), REST weight per second, and the
# back-off a 429/418 asked for.
EGRESS_KEY_PREFIX = CONTROL_PREFIX + "egress:"

# States in a member's streams hash: subscribed but no value yet since, or served at least once since.
PENDING = "pending"
LIVE = "live"


def symbol_tag(symbol: str) -> str:
    """The hash tag of a symbol's keys (any case): its bucket, ``{0}`` to ``{15}``."""
    return f"{{{zlib.crc32(symbol.lower().encode()) % KEY_BUCKETS}}}"


def key_tag(key: str) -> str:
    """A key's hash tag as Redis Cluster reads it (the first ``{...}`` with something inside), or
    the whole key if it has none: keys with equal tags share a slot."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start : end + 1]
    return key


def snapshot_prefix(kind: str) -> str:
    """What every record key of one kind (its key segment) starts with: ``transmute:bookticker:``."""
    return f"transmute:{kind}:"


def snapshot_key(kind: str, symbol: str) -> str:
    """Key of the latest record of one kind (its key segment) for one symbol (in any case):
    ``transmute:bookticker:btcusdt:{7}``."""
    return f"transmute:{kind}:{symbol.lower()}:{symbol_tag(symbol)}"


def symbol_of(key: str, prefix: str) -> str:
    """The SYMBOL of a key made of ``prefix``, the symbol and its tag (``snapshot_key``)."""
    return key[len(prefix) :].rpartition(":")[0].upper()


def voucher_key(messenger: str, connection: int, tag: str) -> str:
    """Key of one live connection's liveness in one bucket: ``transmute:voucher:5f3a9c1e:3:{7}``."""
    return f"{VOUCHER_PREFIX}{messenger}:{connection}:{tag}"


def member_key(member: str) -> str:
    """Key of one member's heartbeat: ``transmute:{control}:member:5f3a9c1e``."""
    return MEMBER_KEY_PREFIX + member


def member_streams_key(member: str) -> str:
    """Key of what one member streams: ``transmute:{control}:streams:5f3a9c1e``."""
    return MEMBER_STREAMS_KEY_PREFIX + member


def voucher_prefix(messenger: str) -> str:
    """What every voucher key of one messenger run starts with: ``transmute:voucher:5f3a9c1e:``."""
    return f"{VOUCHER_PREFIX}{messenger}:"


def staged_key(messenger: str, key: str) -> str:
    """Where one messenger run stages a large record for ``key`` (a snapshot key), in its slot:
    ``transmute:staged:5f3a9c1e:transmute:depth:btcusdt:{7}``."""
    return f"{STAGED_PREFIX}{messenger}:{key}"


def demand_member(kind: str, symbol: str) -> str:
    """The member of DEMAND_KEY for a stream (kind's key segment): ``bookticker:BTCUSDT``."""
    return f"{kind}:{symbol}"


def market_demand_member(kind: str) -> str:
    """The member of DEMAND_KEY for every trading symbol of a kind (its key segment): ``ticker:*``.

    The messenger expands it over the symbols trading now, following listings as they change.
    """
    return demand_member(kind, ALL_SYMBOLS)


def parse_demand_member(member: str) -> tuple[str, str] | None:
    """(kind, SYMBOL) of a DEMAND_KEY member, or None if it is not one (SYMBOL may be ALL_SYMBOLS)."""
    kind, sep, symbol = member.partition(":")
    if not sep or not kind or not symbol:
        return None
    return kind, symbol


def client_budget_key(address: str) -> str:
    """Key of one client's budget of new on-demand streams (server.admission)."""
    return CLIENT_BUDGET_KEY_PREFIX + address


def egress_connections_key(egress: str) -> str:
    """Key of an egress's recent connection attempts: ``transmute:{control}:egress:default:connections``."""
    return f"{EGRESS_KEY_PREFIX}{egress}:connections"


def egress_weight_key(egress: str) -> str:
    """Key of an egress's REST weight of the last minute, by second."""
    return f"{EGRESS_KEY_PREFIX}{egress}:weight"


def egress_backoff_key(egress: str) -> str:
    """Key of an egress's shared back-off (a 429/418's Retry-After)."""
    return f"{EGRESS_KEY_PREFIX}{egress}:backoff"
