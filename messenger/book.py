"""The latest value of every key, and which live connections vouch that it is current.

The freshness rule lives here. A connection *vouches* for a key once it is subscribed and
has caught up on it: it delivered a frame for it, a REST seed fetched after its subscription
was applied, or a connection that already vouched was heard from after the subscription
(make before break). While any vouching connection is alive, the value is current however
long ago it changed; when the last one goes, the key is invalidated at once.

Updates are applied only when their order (an update id, a trade id, an event time) is newer,
whichever connection brings them.
Readers (one thread per connection), the REST seeder, the supervisor and the Redis writer
all meet here, so every method takes the one lock.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

from contract.keys import LIVE, PENDING, RECENT_TRADES_KEPT
from contract.records import SOURCE_REST, SOURCE_STREAM
from messenger.binance import Fields, Order


class Voucher(Protocol):
    """What the book needs to know of a connection."""

    id: int
    last_heard: float  # time.monotonic() of the last frame of any kind from the exchange


@dataclass(slots=True, eq=False)
class Entry:
    """One key's latest value and who vouches for it."""

    key: str
    fields: Fields | None = None
    u: Order = None
    changed: float = 0.0  # monotonic time the value last changed
    written: float = 0.0  # monotonic time it was last handed to the writer
    source: str = SOURCE_STREAM
    vouchers: set[Voucher] = field(default_factory=set)
    history_key: str | None = None  # for kinds that keep recent items (trades)
    new_items: list[tuple[Order, Fields]] = field(default_factory=list)  # not written yet, oldest first
    history_whole: bool = False  # the list holds REST's recent items: it may be written and served


@dataclass(slots=True)
class Write:
    """One record to write: its fields and the monotonic times that say how current it is."""

    key: str
    fields: Fields
    changed: float
    heard: float
    source: str
    connection: int = 0  # the vouching connection heard from last
    history_key: str | None = None
    new_items: list[Fields] = field(default_factory=list)
    update: bool = True  # a new value (not a refresh of one already written)


@dataclass(slots=True)
class Batch:
    """What the writer must do now."""

    writes: list[Write]
    deletes: list[str]
    # What we stream, for the server: key -> "pending"/"live", or None once no longer streamed.
    streams: dict[str, str | None] = field(default_factory=dict)
    streams_complete: bool = False  # ``streams`` is the whole set: replace what Redis holds
    heartbeat: dict[str, Any] | None = None  # the messenger's own status, on refreshes

    def __bool__(self) -> bool:
        return bool(self.writes or self.deletes or self.streams or self.streams_complete or self.heartbeat)


def _heard(conn: Voucher) -> float:
    return conn.last_heard


class Book:
    """Thread-safe store of the latest records; the single source of what may be served."""

    def __init__(self, liveness_timeout_s: float) -> None:
        self.liveness_timeout_s = liveness_timeout_s
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
        self._tracked: dict[str, str] = {}  # keys we stream -> PENDING until first served, then LIVE
        self._tracked_changed: set[str] = set()
        # Connections let go of: a frame their reader thread still hands over is ignored.
        self._released: weakref.WeakSet[Voucher] = weakref.WeakSet()
        self.accepted = 0
        self.older_dropped = 0
        self.seeds_applied = 0

    # -- values coming in -------------------------------------------------------------

    def on_frame(
        self, conn: Voucher, key: str, u: Order, fields: Fields, now: float, history_key: str | None = None
    ) -> bool:
        """A stream update arrived on ``conn``; returns whether it became the current value.

        ``u`` orders the stream's updates; with ``history_key``, every accepted one is also kept
        in the recent-items list there.
        """
        with self.lock:
            if conn in self._released:
                return False
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = Entry(key)
            if u is not None and entry.u is not None and u <= entry.u:
                # Older or duplicate (overlapping connections): never go back. It still shows
                # that conn was subscribed before the current value, so it may join vouching.
                self.older_dropped += 1
                if entry.vouchers and conn not in entry.vouchers:
                    self._vouch(conn, entry)
                return False
            entry.fields, entry.u, entry.changed, entry.source = fields, u, now, SOURCE_STREAM
            if history_key is not None:
                entry.history_key = history_key
                entry.new_items.append((u, fields))
                # Until REST's recent items arrive the list is not whole: keep a bounded buffer.
                del entry.new_items[:-RECENT_TRADES_KEPT]
            self.accepted += 1
            if conn not in entry.vouchers:
                self._vouch(conn, entry)
            self._dirty.add(key)
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
        history: tuple[str, list[tuple[Order, Fields]]] | None = None,
    ) -> bool:
        """A REST value fetched for ``conn``; applied only if nothing vouches for a value yet.

        ``u``: its order, when REST gives one (never older than the last streamed value).
        ``history``: (list key, recent (order, item)s, oldest first) for kinds that keep them;
        they start the list, before what the stream brought meanwhile, even if the stream's
        value came first and stays the current one.
        """
        with self.lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            if entry.vouchers:
                # A streamed value is current: REST must not overwrite it. Its recent items
                # still start the list (fetched after the subscription: no gap to what streamed).
                if history is not None and not entry.history_whole:
                    self._start_history(entry, history[0], history[1])
                return False
            pending = self._pending.get(conn)
            if entry.changed > requested_at or pending is None or key not in pending:
                return False  # conn is gone or no longer carries the key
            if u is not None and entry.u is not None and u < entry.u:
                return False  # older than what was streamed before
            entry.fields, entry.changed, entry.source = fields, now, SOURCE_REST
            if u is not None:
                entry.u = u
            if history is not None:
                self._start_history(entry, history[0], history[1])
            self.seeds_applied += 1
            self._vouch(conn, entry)
            self._dirty.add(key)
        self.wake.set()
        return True

    def _start_history(self, entry: Entry, key: str, items: list[tuple[Order, Fields]]) -> None:
        """The list begins with REST's items, then what was streamed since (once each, in order)."""
        last = items[-1][0] if items else None
        streamed = [(o, f) for o, f in entry.new_items if last is None or o > last]
        entry.history_key, entry.new_items, entry.history_whole = key, items + streamed, True
        self._dirty.add(entry.key)
        self.wake.set()

    # -- connections carrying keys ----------------------------------------------------

    def carry(self, conn: Voucher, keys: list[str], since: float) -> list[str]:
        """``conn`` is subscribed to ``keys`` since ``since``; returns the keys that need a seed."""
        need: list[str] = []
        with self.lock:
            if conn in self._released:
                return need
            pending = self._pending.setdefault(conn, {})
            self._vouched.setdefault(conn, set())
            for key in keys:
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

        Keys left with no voucher are invalidated at once. Returns the (connection, key) pairs
        that another live connection carries but cannot vouch for yet: they need a seed.
        """
        reseed: list[tuple[Voucher, str]] = []
        with self.lock:
            vouched = self._vouched.get(conn, set())
            pending = self._pending.get(conn, {})
            if keys is None:
                keys = list(vouched | pending.keys())
                self._vouched.pop(conn, None)
                self._pending.pop(conn, None)
                self._released.add(conn)
            for key in keys:
                pending.pop(key, None)
                vouched.discard(key)
                entry = self._entries.get(key)
                if entry is None or conn not in entry.vouchers:
                    continue
                entry.vouchers.discard(conn)
                if not entry.vouchers:
                    self._gone.add(key)
                    self._dirty.discard(key)
                    reseed.extend((c, key) for c, p in self._pending.items() if key in p)
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

    def vouched_keys(self, conn: Voucher) -> set[str]:
        """The keys ``conn`` vouches for now."""
        with self.lock:
            return set(self._vouched.get(conn, ()))

    def pending_keys(self, conn: Voucher) -> set[str]:
        """The keys ``conn`` carries but cannot vouch for yet."""
        with self.lock:
            return set(self._pending.get(conn, ()))

    def seed_wanted(self, conn: Voucher) -> set[str]:
        """What a seed on behalf of ``conn`` would still fill: keys it cannot vouch for yet, and
        keys it vouches for whose list of recent items is not whole yet."""
        with self.lock:
            wanted = set(self._pending.get(conn, ()))
            for key in self._vouched.get(conn, ()):
                entry = self._entries[key]
                if entry.history_key is not None and not entry.history_whole:
                    wanted.add(key)
            return wanted

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

    def take(self, now: float, refresh_older_than: float | None, everything: bool = False) -> Batch:
        """Changed values (and, with ``refresh_older_than``, values written before it) to write.

        ``everything``: every servable value and every known key that is not (after Redis
        came back). A value whose every voucher has gone silent past the liveness timeout is
        never handed out, even before the supervisor notices: it is left to expire.
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
            # A list of recent items is only whole while its stream is: it goes with its key.
            history = []
            for key in deletes:
                entry = self._entries[key]
                entry.new_items, entry.history_whole = [], False
                if entry.history_key is not None:
                    history.append(entry.history_key)
            deletes.extend(history)
            limit = now - self.liveness_timeout_s
            entries, by_written = self._entries, self._by_written
            for key in keys:
                entry = entries[key]
                vouchers = entry.vouchers
                if not vouchers or entry.fields is None:
                    continue
                # Usually one connection vouches; the latest heard of several says the most.
                voucher = next(iter(vouchers)) if len(vouchers) == 1 else max(vouchers, key=_heard)
                heard = voucher.last_heard
                if heard < limit:
                    by_written.setdefault(key, None)  # refreshed again if its connection is heard
                    continue
                entry.written = now
                by_written.pop(key, None)
                by_written[key] = None
                if entry.history_key is None:
                    write = Write(key, entry.fields, entry.changed, heard, entry.source, voucher.id)
                else:
                    whole = entry.history_whole
                    items = [item for _, item in entry.new_items] if whole else []
                    write = Write(key, entry.fields, entry.changed, heard, entry.source, voucher.id,
                                  entry.history_key if whole else None, items)  # fmt: skip
                    if whole:
                        entry.new_items = []
                write.update = key in updated
                writes.append(write)
            self._dirty = set()
            self._gone = set()
            if everything:
                streams: dict[str, str | None] = dict(self._tracked)
            else:
                streams = {k: self._tracked.get(k) for k in self._tracked_changed}
            self._tracked_changed = set()
        return Batch(writes, deletes, streams, everything)

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
        with self.lock:
            fresh = 0
            for key in self._tracked:
                entry = self._entries.get(key)
                if entry is not None and any(v.last_heard >= limit for v in entry.vouchers):
                    fresh += 1
            return len(self._tracked), fresh

    def __len__(self) -> int:
        with self.lock:
            return len(self._entries)
