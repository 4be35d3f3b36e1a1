"""The latest value of every key, and which live connections vouch that it is current.

The freshness rule lives here. The supervisor *assigns* keys to a connection and takes them
back; only a connection a key is assigned to can carry it (once subscribed) or vouch for it,
whatever its reader thread still hands over, so a stream given up can never be vouched for
again. A connection *vouches* for a key once it is subscribed and has caught up on it: it
delivered a frame for it, a REST seed fetched after its subscription was applied, or a
connection that already vouched was heard from after the subscription (make before break). While
any vouching connection is alive, the value is current however long ago it changed; when the
last one goes, the key is invalidated at once.

Updates are applied only when their order (an update id, a trade id, an event time) is newer,
whichever connection brings them; each value is written with its order, and Redis applies the
same rule between messengers (messenger.conditional).
Readers (one thread per connection), the REST seeder, the supervisor and the Redis writer
all meet here, so every method takes the one lock.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from contract.keys import LIVE, PENDING
from contract.records import SOURCE_REST, SOURCE_STREAM
from messenger.binance import Fields, Order


class Voucher(Protocol):
    """What the book needs to know of a connection."""

    id: int
    last_heard: float  # time.monotonic() of the last frame of any kind from the exchange


# Closed candles kept for publication while their key cannot be written (its connection silent).
SUPERSEDED_KEPT = 16


@dataclass(slots=True, eq=False)
class Entry:
    """One key's latest value and who vouches for it."""

    key: str
    fields: Fields | None = None
    u: Order = None  # the newest order taken: an update at or before it is not applied
    order: Order = None  # the value's own order (None for a REST seed without one), written with it
    changed: float = 0.0  # monotonic time the value last changed
    written: float = 0.0  # monotonic time it was last handed to the writer
    named: Voucher | None = None  # the connection the value in Redis says vouches for it
    source: str = SOURCE_STREAM
    vouchers: set[Voucher] = field(default_factory=set)
    # Closed candles replaced before the writer took them, with their orders: each is still
    # published (live push promises every closed candle), though only the latest value is stored.
    superseded: list[tuple[Order, Fields]] = field(default_factory=list)


@dataclass(slots=True)
class Write:
    """One record to write: its fields and the monotonic times that say how current it is."""

    key: str
    fields: Fields
    changed: float
    heard: float
    source: str
    connection: int = 0  # the connection it names as its voucher (see Batch.vouchers)
    order: Order = None  # its order (contract.ordering): Redis refuses it if older than what it holds
    update: bool = True  # a new value (not a refresh of one already written)
    renew: bool = False  # only its expiry is due: Redis holds this very record already
    # Closed candles published before it, with their orders (Entry.superseded); a shared empty
    # tuple for nearly every write (one list each cost the writer's thread a moment per record).
    superseded: Sequence[tuple[Order, Fields]] = ()


@dataclass(slots=True)
class Batch:
    """What the writer must do now."""

    writes: list[Write]
    deletes: list[str]
    # What we stream, for the server: key -> "pending"/"live", or None once no longer streamed.
    streams: dict[str, str | None] = field(default_factory=dict)
    streams_complete: bool = False  # ``streams`` is the whole set: replace what Redis holds
    heartbeat: dict[str, Any] | None = None  # the messenger's own status, on refreshes
    # Live connections whose liveness must be (re)announced: id -> when last heard (monotonic).
    vouchers: dict[int, float] = field(default_factory=dict)
    # Connections let go of: their liveness is withdrawn.
    retired_vouchers: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.writes or self.deletes or self.streams or self.streams_complete or self.heartbeat
            or self.vouchers or self.retired_vouchers
        )  # fmt: skip


def _heard(conn: Voucher) -> float:
    return conn.last_heard


class Book:
    """Thread-safe store of the latest records; the single source of what may be served."""

    def __init__(self, liveness_timeout_s: float) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        # Where accepted items of streams that keep a list go (messenger.trade_history): tail key, item.
        self.on_item: Callable[[str, Fields], None] | None = None
        self.lock = threading.Lock()
        self.wake = threading.Event()  # set when there is something to write
        self._entries: dict[str, Entry] = {}
        self._dirty: set[str] = set()
        self._gone: set[str] = set()
        self._vouched: dict[Voucher, set[str]] = {}
        # Keys handed to the writer, least recently first: the ones due for a refresh are at
        # the front, so finding them costs as many steps as there are, not one per key.
        self._by_written: dict[str, None] = {}
        self._pending: dict[Voucher, dict[str, float]] = {}
        # Keys the supervisor gave each connection: vouched and pending keys are always among them.
        self._assigned: dict[Voucher, set[str]] = {}
        self._tracked: dict[str, str] = {}  # keys we stream -> PENDING until first served, then LIVE
        # Keys another member carries now, which this one is letting go of: not written any more,
        # so the record in Redis becomes the other's before this one withdraws its own.
        self._muted: frozenset[str] = frozenset()
        self._tracked_changed: set[str] = set()
        # Connections let go of: a frame their reader thread still hands over is ignored.
        self._released: weakref.WeakSet[Voucher] = weakref.WeakSet()
        self._announced: weakref.WeakSet[Voucher] = weakref.WeakSet()  # liveness written to Redis
        self._retired: list[int] = []  # ids of released connections, for the writer
        self.accepted = 0
        self.older_dropped = 0
        self.unassigned_dropped = 0  # frames for a key their connection no longer carries
        self.seeds_applied = 0

    # -- values coming in -------------------------------------------------------------

    def on_frame(
        self, conn: Voucher, key: str, u: Order, fields: Fields, now: float, history_key: str | None = None
    ) -> bool:
        """A stream update arrived on ``conn``; returns whether it became the current value.

        ``u`` orders the stream's updates; with ``history_key``, every accepted one is also
        handed to ``on_item`` for the list kept there.
        """
        with self.lock:
            if key not in self._vouched.get(conn, ()) and key not in self._pending.get(conn, ()):
                # Not (or no longer) subscribed on conn: a frame its reader looked up before the
                # stream was taken back, or one that overtook its SUBSCRIBE reply.
                self.unassigned_dropped += 1
                return False
            entry = self._entries[key]
            if u is not None and entry.u is not None and u <= entry.u:
                # Older or duplicate (overlapping connections): never go back. It still shows
                # that conn was subscribed before the current value, so it may join vouching.
                self.older_dropped += 1
                if entry.vouchers and conn not in entry.vouchers:
                    self._vouch(conn, entry)
                return False
            previous = entry.fields
            if previous is not None and key in self._dirty and previous.get("closed") is True:
                entry.superseded.append((entry.order, previous))  # a closed candle the writer has not taken
                del entry.superseded[:-SUPERSEDED_KEPT]
            entry.fields, entry.u, entry.changed, entry.source = fields, u, now, SOURCE_STREAM
            entry.order = u
            self.accepted += 1
            if conn not in entry.vouchers:
                self._vouch(conn, entry)
            self._dirty.add(key)
        if history_key is not None and self.on_item is not None:
            self.on_item(history_key, fields)
        # The writer clears the event before it takes: skipping set() while it is set loses nothing.
        if not self.wake.is_set():
            self.wake.set()
        return True

    def seed(
        self,
        conn: Voucher,
        key: str,
        fields: Fields,
        requested_at: float,
        now: float,
        u: Order = None,
    ) -> bool:
        """A REST value fetched for ``conn``; applied only if nothing vouches for a value yet.

        ``u``: its order, when REST gives one (never older than the last streamed value).
        """
        with self.lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            if entry.vouchers:
                return False  # a streamed value is current: REST must not overwrite it
            pending = self._pending.get(conn)
            if entry.changed > requested_at or pending is None or key not in pending:
                return False  # conn is gone or no longer carries the key
            if u is not None and entry.u is not None and u < entry.u:
                return False  # older than what was streamed before
            entry.fields, entry.changed, entry.source, entry.order = fields, now, SOURCE_REST, u
            if u is not None:
                entry.u = u
            self.seeds_applied += 1
            self._vouch(conn, entry)
            self._dirty.add(key)
        self.wake.set()
        return True

    def withdraw(self, key: str, now: float) -> bool:
        """The value of ``key`` is no longer known to be right (a local order book lost sync).

        It is invalidated at once (deleted from Redis by the next write), and forgotten with its
        order, so the value it is rebuilt to is taken whatever its order. The connections that
        vouched for it still carry it: each vouches again with the next value it brings. Returns
        whether anything vouched for it.
        """
        with self.lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            vouchers = entry.vouchers
            for conn in vouchers:
                self._vouched.get(conn, set()).discard(key)
                if key in self._assigned.get(conn, ()):
                    self._pending.setdefault(conn, {})[key] = now
            entry.vouchers = set()
            entry.fields, entry.u, entry.order, entry.superseded = None, None, None, []
            self._dirty.discard(key)
            self._gone.add(key)
            # Its stream stays "live": it had a value and has none, so the server says so at once
            # rather than wait as for a stream just subscribed.
        self.wake.set()
        return bool(vouchers)

    # -- connections carrying keys ----------------------------------------------------

    def assign(self, conn: Voucher, keys: list[str]) -> None:
        """The supervisor gives ``conn`` these keys to carry (once subscribed: see ``carry``)."""
        with self.lock:
            if conn not in self._released:
                self._assigned.setdefault(conn, set()).update(keys)

    def carry(self, conn: Voucher, keys: list[str], since: float) -> list[str]:
        """``conn`` is subscribed to ``keys`` since ``since``; returns the keys that need a seed.

        Keys no longer assigned to ``conn`` are ignored: the exchange's confirmation of a stream
        we have given up since must not bring it back.
        """
        need: list[str] = []
        with self.lock:
            assigned = self._assigned.get(conn)
            if assigned is None:
                return need
            pending = self._pending.setdefault(conn, {})
            self._vouched.setdefault(conn, set())
            for key in keys:
                if key not in assigned:
                    continue
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._entries[key] = Entry(key)
                if conn in entry.vouchers:
                    continue
                pending[key] = since
                if not entry.vouchers:
                    need.append(key)
        return need

    def inherit(self) -> int:
        """Let connections that caught up take over vouching; returns how many keys moved.

        A key ``conn`` is subscribed to since ``t`` is current on ``conn`` once a connection
        that vouches for it has been heard from after ``t``: everything that changed before
        then has reached us, everything after will reach ``conn``.
        """
        moved = 0
        with self.lock:
            for conn, pending in self._pending.items():
                for key, since in list(pending.items()):
                    entry = self._entries[key]
                    if any(v.last_heard > since for v in entry.vouchers):
                        self._vouch(conn, entry)
                        moved += 1
        return moved

    def release(self, conn: Voucher, keys: list[str] | None = None) -> list[tuple[Voucher, str]]:
        """``conn`` no longer carries ``keys`` (None: any key; it closed or died).

        They are no longer assigned to it, so nothing ``conn``'s reader still hands over can
        vouch for them again. Keys left with no voucher are invalidated at once; a key another
        connection still vouches for is written again, naming that one. Returns the
        (connection, key) pairs that another live connection carries but cannot vouch for
        yet: they need a seed.
        """
        reseed: list[tuple[Voucher, str]] = []
        with self.lock:
            vouched = self._vouched.get(conn, set())
            pending = self._pending.get(conn, {})
            assigned = self._assigned.get(conn, set())
            if keys is None:
                keys = list(vouched | pending.keys() | assigned)
                self._vouched.pop(conn, None)
                self._pending.pop(conn, None)
                self._assigned.pop(conn, None)
                self._released.add(conn)
                self._announced.discard(conn)
                self._retired.append(conn.id)
            for key in keys:
                pending.pop(key, None)
                vouched.discard(key)
                assigned.discard(key)
                entry = self._entries.get(key)
                if entry is None or conn not in entry.vouchers:
                    continue
                entry.vouchers.discard(conn)
                if not entry.vouchers:
                    self._gone.add(key)
                    self._dirty.discard(key)
                    reseed.extend((c, key) for c, p in self._pending.items() if key in p)
                elif entry.named is conn:
                    self._dirty.add(key)  # Redis names conn: name one that still vouches
        self.wake.set()
        return reseed

    # -- what we stream ---------------------------------------------------------------

    def track(self, keys: list[str]) -> None:
        """These keys are streamed from now on: ``pending`` until they are first served."""
        with self.lock:
            for key in keys:
                if key not in self._tracked:
                    entry = self._entries.get(key)
                    self._tracked[key] = LIVE if entry is not None and entry.vouchers else PENDING
                    self._tracked_changed.add(key)
        self.wake.set()

    def untrack(self, keys: list[str]) -> None:
        """These keys are no longer streamed."""
        with self.lock:
            for key in keys:
                if self._tracked.pop(key, None) is not None:
                    self._tracked_changed.add(key)
        self.wake.set()

    def mute(self, keys: frozenset[str]) -> None:
        """Write none of these keys from now on (and any other again); deletions still go out."""
        with self.lock:
            self._muted = keys

    def vouched_keys(self, conn: Voucher) -> set[str]:
        """The keys ``conn`` vouches for now."""
        with self.lock:
            return set(self._vouched.get(conn, ()))

    def pending_keys(self, conn: Voucher) -> set[str]:
        """The keys ``conn`` carries but cannot vouch for yet."""
        with self.lock:
            return set(self._pending.get(conn, ()))

    def caught_up(self, conn: Voucher) -> bool:
        """Whether ``conn`` vouches for every key it was given. Asked of a successor before the
        old connection is closed: a connection that says it is open but whose streams the book
        has not yet been told are confirmed (``carry``) has nothing pending, yet vouches for
        nothing; the old one closed then left a quiet key with no voucher (a 500 in CI)."""
        with self.lock:
            assigned = self._assigned.get(conn)
            return assigned is not None and assigned <= self._vouched.get(conn, set())

    def seed_wanted(self, conn: Voucher) -> set[str]:
        """What a seed on behalf of ``conn`` would still fill: the keys it cannot vouch for yet."""
        with self.lock:
            return set(self._pending.get(conn, ()))

    def _vouch(self, conn: Voucher, entry: Entry) -> None:
        entry.vouchers.add(conn)
        self._vouched.setdefault(conn, set()).add(entry.key)
        if self._tracked.get(entry.key) == PENDING:
            self._tracked[entry.key] = LIVE
            self._tracked_changed.add(entry.key)
        pending = self._pending.get(conn)
        if pending is not None:
            pending.pop(entry.key, None)

    # -- what the writer takes --------------------------------------------------------

    def take(
        self, now: float, refresh_older_than: float | None, everything: bool = False, announce: bool = False
    ) -> Batch:
        """Changed values (and, with ``refresh_older_than``, values written before it) to write.

        A value names one connection that vouches for it; Redis holds each live connection's
        liveness under a short TTL, and the server serves a value only while the connection it
        names is live there. So a quiet value is never rewritten to stay servable: it is only
        renewed now and then against leaks (``refresh_older_than``), and rewritten when the
        connection it names lets go of it while another one still vouches.

        ``announce``: the liveness of every live connection is due. ``everything``: every
        servable value, every live connection and every known key that is not (after Redis
        came back). A value whose every voucher has gone silent past the liveness timeout is
        never handed out, even before the supervisor notices.
        """
        writes: list[Write] = []
        with self.lock:
            updated: set[str] = set()
            if everything:
                keys: set[str] | Any = self._entries.keys()
                deletes = [k for k, e in self._entries.items() if not e.vouchers]
            else:
                keys = updated = self._dirty
                # A key may have been invalidated and then vouched for again before this.
                deletes = [k for k in self._gone if not self._entries[k].vouchers]
                if refresh_older_than is not None:
                    keys = keys | self._due(refresh_older_than)
            for key in deletes:
                self._entries[key].named = None
            limit = now - self.liveness_timeout_s
            entries, by_written, announced = self._entries, self._by_written, self._announced
            muted = self._muted
            vouchers: dict[int, float] = {}
            for key in keys:
                if muted and key in muted:
                    continue
                entry = entries[key]
                candidates = entry.vouchers
                if not candidates or entry.fields is None:
                    continue
                named = entry.named
                if named is not None and named in candidates and named.last_heard >= limit:
                    voucher = named  # Redis names it already: a renewal needs no rewrite
                elif len(candidates) == 1:
                    voucher = next(iter(candidates))
                else:
                    voucher = max(candidates, key=_heard)  # the latest heard of several
                heard = voucher.last_heard
                if heard < limit:
                    by_written.setdefault(key, None)  # refreshed again if its connection is heard
                    continue
                if voucher not in announced:
                    vouchers[voucher.id] = heard
                    announced.add(voucher)
                entry.written = now
                by_written.pop(key, None)
                by_written[key] = None
                renew = key not in updated and voucher is named and not everything
                entry.named = voucher
                superseded = entry.superseded
                if superseded:
                    entry.superseded = []
                writes.append(Write(key, entry.fields, entry.changed, heard, entry.source, voucher.id,
                                    entry.order, key in updated, renew, superseded or ()))  # fmt: skip
            if announce or everything:
                for conn in self._vouched:
                    if conn.last_heard >= limit:
                        vouchers[conn.id] = conn.last_heard
                        announced.add(conn)
            self._dirty = set()
            self._gone = set()
            retired, self._retired = self._retired, []
            if everything:
                streams: dict[str, str | None] = dict(self._tracked)
            else:
                streams = {k: self._tracked.get(k) for k in self._tracked_changed}
            self._tracked_changed = set()
        return Batch(writes, deletes, streams, everything, vouchers=vouchers, retired_vouchers=retired)

    def _due(self, written_before: float) -> set[str]:
        """Keys last written before ``written_before``. They leave the order; each one written
        (or vouched for by a silent connection) goes back at its end, one vouched for by none
        when it gets a new value."""
        due = set()
        for key in self._by_written:
            if self._entries[key].written >= written_before:
                break
            due.add(key)
        for key in due:
            del self._by_written[key]
        return due

    def freshness(self, now: float) -> tuple[int, int]:
        """(keys streamed, of those: servable now)."""
        limit = now - self.liveness_timeout_s
        with self.lock:  # held by the writer's heartbeat: set operations, not a loop over vouchers
            live = {conn for conn in self._vouched if conn.last_heard >= limit}
            entries = self._entries
            fresh = 0
            for key in self._tracked:
                entry = entries.get(key)
                if entry is not None and not live.isdisjoint(entry.vouchers):
                    fresh += 1
            return len(self._tracked), fresh

    def __len__(self) -> int:
        with self.lock:
            return len(self._entries)
