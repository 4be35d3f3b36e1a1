"""The Redis key layout both processes agree on. Keys are built here and nowhere else.

| key | type | written by | what |
|---|---|---|---|
| ``transmute:<kind>:<symbol>`` | string, TTL | messenger | the latest record (contract.records) |
| ``transmute:<kind>:<symbol>`` | channel | messenger | each new record of a watched key; empty: gone |
| ``transmute:history:<series>:<symbol>`` | sorted set, TTL | messenger | kept trades (trade_history) |
| ``transmute:backfilled:<series>:<symbol>`` | sorted set, TTL | messenger | older trades fetched on request |
| ``transmute:backfilled:<series>:<symbol>:origin`` | string, TTL | messenger | a trade list's first id |
| ``transmute:backfill`` | sorted set + channel | server | history asked for (contract.backfill) |
| ``transmute:voucher:<run>:<n>`` | string, TTL | messenger | a live connection's last word (epoch ms) |
| ``transmute:staged:<run>:<key>`` | string, TTL | messenger | a large record on its way to ``<key>`` |
| ``transmute:watched`` | sorted set | server | keys a live-push client follows, scored by expiry (ms) |
| ``transmute:members`` | sorted set | messenger | members (messenger runs) scored by when presumed dead |
| ``transmute:leaving`` | sorted set | messenger | members stopping cleanly (own nothing), scored alike |
| ``transmute:member:<member>`` | string, TTL | messenger | a member's heartbeat: what it carries, how fresh |
| ``transmute:streams:<member>`` | hash | messenger | snapshot key -> ``pending`` / ``live`` it streams |
| ``transmute:wants`` | hash | messenger | member -> the streams it pins (symbols, ``--all``, kinds), JSON |
| ``transmute:symbols`` | hash | messenger | symbol -> status (TRADING, BREAK, ...) from exchangeInfo |
| ``transmute:exchangeinfo`` | string | messenger | the last exchangeInfo document |
| ``transmute:demand`` | sorted set | server | ``<kind>:<SYMBOL>`` scored by its last request (epoch ms) |
| ``transmute:demand`` | sorted set | server | ``<kind>:*``: every trading symbol of a kind (MARKET_KINDS) |
| ``transmute:demand`` | channel | server | a demand was registered: look now |
| ``transmute:client:<address>`` | hash, TTL | server | a client's budget of new on-demand streams |
| ``transmute:egress:<egress>:connections`` | sorted set, TTL | messenger | new connections in the window |
| ``transmute:egress:<egress>:weight`` | hash, TTL | messenger | REST weight taken, by epoch second |
| ``transmute:egress:<egress>:backoff`` | string, TTL | messenger | until when (epoch ms) to wait |
"""

from __future__ import annotations

# One record per stream kind and symbol, e.g. transmute:bookticker:btcusdt (contract.kinds.key_kind).
SNAPSHOT_KEY_TEMPLATE = "transmute:{kind}:{symbol}"
# A live connection of one messenger run (an id of its own per start): written while the
# connection is heard from, with SNAPSHOT_TTL_MS. A record names the ones that vouch for it
# (contract.records.VOUCHER) and is served only while one of those keys exists.
VOUCHER_KEY_TEMPLATE = "transmute:voucher:{messenger}:{connection}"
# Records outlive their last write by this much at most: a bound on what a messenger that died
# leaves behind, not on freshness (that is the voucher's TTL). Renewed well before it runs out.
RECORD_TTL_MS = 600_000
# A large record, written here by one messenger run just before its script renames it to its key
# (messenger.conditional): gone at once, unless the run died between the two (then RECORD_TTL_MS).
STAGED_KEY_TEMPLATE = "transmute:staged:{messenger}:{key}"
WATCHED_KEY = "transmute:watched"
# Every messenger run is a member (contract.members): registered here, scored by the time (epoch
# ms) it is presumed dead unless heard from again (LIVENESS_TIMEOUT_MS after its last word).
MEMBERS_KEY = "transmute:members"
# Members stopping cleanly (scored the same): still carrying, but owning nothing any more.
LEAVING_KEY = "transmute:leaving"
# A member's heartbeat, written every refresh (a third of SNAPSHOT_TTL_MS) with the values' TTL:
# it is gone as soon as they are when the member dies, so /readyz says so as soon as /snapshot does.
MEMBER_KEY_TEMPLATE = "transmute:member:{member}"
# What a member streams; only the hashes of live members count (contract.members).
MEMBER_STREAMS_KEY_PREFIX = "transmute:streams:"
MEMBER_STREAMS_KEY_TEMPLATE = MEMBER_STREAMS_KEY_PREFIX + "{member}"
# What each member pins, so that every member plans over the same wanted streams.
WANTS_KEY = "transmute:wants"
SYMBOLS_KEY = "transmute:symbols"
EXCHANGE_INFO_KEY = "transmute:exchangeinfo"
DEMAND_KEY = "transmute:demand"
DEMAND_CHANNEL = "transmute:demand"
# The symbol of a DEMAND_KEY member that asks for every trading symbol of its kind.
ALL_SYMBOLS = "*"
# A token bucket per client address (tokens, when last counted), for new on-demand streams.
CLIENT_BUDGET_KEY_TEMPLATE = "transmute:client:{address}"
# One Binance budget per egress address (the EGRESS setting), shared by the messengers behind it
# (messenger.egress): connection attempts scored by time (ms), REST weight per second, and the
# back-off a 429/418 asked for.
EGRESS_CONNECTIONS_KEY_TEMPLATE = "transmute:egress:{egress}:connections"
EGRESS_WEIGHT_KEY_TEMPLATE = "transmute:egress:{egress}:weight"
EGRESS_BACKOFF_KEY_TEMPLATE = "transmute:egress:{egress}:backoff"

# States in a member's streams hash: subscribed but no value yet since, or served at least once since.
PENDING = "pending"
LIVE = "live"


def snapshot_key(kind: str, symbol: str) -> str:
    """Key of the latest record of one kind (its key segment) for one symbol (in any case)."""
    return SNAPSHOT_KEY_TEMPLATE.format(kind=kind, symbol=symbol.lower())


def voucher_key(messenger: str, connection: int) -> str:
    """Key of one live connection's liveness: ``transmute:voucher:5f3a9c1e:3``."""
    return VOUCHER_KEY_TEMPLATE.format(messenger=messenger, connection=connection)


def member_key(member: str) -> str:
    """Key of one member's heartbeat: ``transmute:member:5f3a9c1e``."""
    return MEMBER_KEY_TEMPLATE.format(member=member)


def member_streams_key(member: str) -> str:
    """Key of what one member streams: ``transmute:streams:5f3a9c1e``."""
    return MEMBER_STREAMS_KEY_TEMPLATE.format(member=member)


def voucher_prefix(messenger: str) -> str:
    """What every voucher key of one messenger run starts with: ``transmute:voucher:5f3a9c1e:``."""
    return VOUCHER_KEY_TEMPLATE.format(messenger=messenger, connection="")


def staged_key(messenger: str, key: str) -> str:
    """Where one messenger run stages a large record for ``key`` (a snapshot key):
    ``transmute:staged:5f3a9c1e:transmute:depth:btcusdt``."""
    return STAGED_KEY_TEMPLATE.format(messenger=messenger, key=key)


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
    return CLIENT_BUDGET_KEY_TEMPLATE.format(address=address)


def egress_connections_key(egress: str) -> str:
    """Key of an egress's recent connection attempts: ``transmute:egress:default:connections``."""
    return EGRESS_CONNECTIONS_KEY_TEMPLATE.format(egress=egress)


def egress_weight_key(egress: str) -> str:
    """Key of an egress's REST weight of the last minute, by second."""
    return EGRESS_WEIGHT_KEY_TEMPLATE.format(egress=egress)


def egress_backoff_key(egress: str) -> str:
    """Key of an egress's shared back-off (a 429/418's Retry-After)."""
    return EGRESS_BACKOFF_KEY_TEMPLATE.format(egress=egress)
