"""A registered script called as one pre-packed ``EVALSHA`` on a connection of the client's own
pool: the server's hot read (contract.servable.CurrentReader, every ``POST /snapshot``) without
redis-py's per-command layers.

Through redis-py, each call packs its arguments generically, takes a connection from the pool
(checking the pid, taking a lock, recording counts, polling the socket for stray data: under gevent
a trip through its hub) and gives it back, inside the command's retry wrapper: a third of what a
gevent worker spends on a request (``wrk -c1`` on one worker, side by side with a bare one-GET
app: 0.74-0.84 of its rate before, 0.92-1.12 after). Here the command is one bytes formatting
(contract.resp), sent and read on a connection of the client's pool.

Connections of a plain pool (one Redis) are kept between calls, in one idle list per pool and
process, shared by every reader of that pool: as many as calls were ever at once, however many
readers are made. Why that is safe:

- A connection goes back to the idle list only after a whole reply was read from it; one that
  failed in any way (timeout, broken socket, an exception from elsewhere mid-read) is
  disconnected first, so a reply left unread is never taken for another call's.
- They are the pool's own (taken with ``get_connection``, counted in use), so ``pool.disconnect()``
  reaches them, and they connect again on their own when next used.
- A forked process starts a list of its own rather than share a socket with its parent.

Any other pool (Sentinel's, which drops its idle connections when the sentinels name another
primary; a blocking pool) gets each connection from the pool and gives it back, as redis-py does.
When redis-py is needed after all, the call is made through it (``Script.__call__``), with the
client's own retry: Redis lacks the script (NOSCRIPT: after a restart, or on a promoted replica,
scripts being not replicated), the connection was broken (Redis restarted, an idle connection
closed), or the client is a cluster's (a key's node can change: MOVED). A read that timed out is
not repeated: Redis gave no answer within the client's timeout, and the caller answers 503 at once.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from contract.resp import command

# The connections kept idle, by pool: (the process that made the list, the list).
_KEPT: weakref.WeakKeyDictionary[Any, tuple[int, list[Any]]] = weakref.WeakKeyDictionary()
_KEPT_LOCK = threading.Lock()


def _kept(pool: Any) -> list[Any]:
    """The idle list of ``pool`` in this process (made on first use; anew after a fork)."""
    pid = os.getpid()
    entry = _KEPT.get(pool)
    if entry is None or entry[0] != pid:
        with _KEPT_LOCK:
            entry = _KEPT.get(pool)
            if entry is None or entry[0] != pid:
                entry = _KEPT[pool] = (pid, [])
    return entry[1]


class PackedScript:
    """Call ``script`` (from ``client.register_script``) on the keys given, as it would answer."""

    def __init__(self, client: Any, script: Script) -> None:
        self._script = script
        # A cluster's keys live on several nodes, each with its pool: redis-py routes them.
        self._pool = None if isinstance(client, RedisCluster) else client.connection_pool
        self._keep = type(self._pool) is redis.ConnectionPool

    def __call__(self, keys: Sequence[str]) -> Any:
        """The script's reply for ``keys`` (no arguments)."""
        pool = self._pool
        if pool is None:
            return self._script(keys=list(keys))
        packed = command(b"EVALSHA", self._script.sha, len(keys), *keys)
        kept = _kept(pool) if self._keep else None
        conn = kept.pop() if kept else pool.get_connection()
        try:
            conn.send_packed_command([packed])
            reply = conn.read_response()
        except NoScriptError:
            pass  # a whole reply, read: the connection is sound
        except redis.ConnectionError:
            conn.disconnect()
        except BaseException:
            conn.disconnect()
            self._give_back(conn, kept)
            raise
        else:
            self._give_back(conn, kept)
            return reply
        self._give_back(conn, kept)
        # Given back first: redis-py loads the script, or connects anew and retries.
        return self._script(keys=list(keys))

    def _give_back(self, conn: Any, kept: list[Any] | None) -> None:
        if kept is None:
            self._pool.release(conn)  # type: ignore[union-attr]
        else:
            kept.append(conn)
