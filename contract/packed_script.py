"""A registered script called as one pre-packed ``EVALSHA`` on connections kept for it: the
server's hot read (contract.servable.CurrentReader, every ``POST /snapshot``) without redis-py's
per-command layers.

Through redis-py, each call packs its arguments generically, takes a connection from the pool
(checking the pid, taking a lock, recording counts, polling the socket for stray data) and gives
it back, and runs inside the retry wrapper: about 70 us of a worker's CPU a request, a third of
what the server spends on one (measured in one process against a local Redis: 155 us a read
through ``Script.__call__``, 80-105 us here, 75-105 for the bare socket round trip). Here the
command is one bytes formatting (contract.resp), sent and read on a connection of the client's
own pool that this object keeps while it is sound.

What is kept, and why it is safe:

- A connection goes back to the idle list only after a whole reply was read from it; one that
  failed in any way (timeout, broken socket, an exception from elsewhere mid-read) is
  disconnected first, so a reply left unread can never be taken for the next call's.
- The connections are taken from the client's pool (and never given back), so they are the
  pool's kind (Sentinel: connected to the primary the sentinels name, and dropped on a failover
  as the pool's are) and connect again on their own when next used after a disconnect.
- A process forked with kept connections drops them rather than share a socket with its parent.

When redis-py is needed after all, the call is made through it (``Script.__call__``), with the
client's own retry: Redis lacks the script (NOSCRIPT: after a restart, or on a promoted replica,
scripts being not replicated), the kept connection was broken (Redis restarted, an idle
connection closed), or the client is a cluster's (a key's node can change: MOVED). A read that
timed out is not repeated: Redis gave no answer within the client's timeout, and the caller
answers 503 at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from contract.resp import command


class PackedScript:
    """Call ``script`` (from ``client.register_script``) on the keys given, as it would answer."""

    def __init__(self, client: Any, script: Script) -> None:
        self._script = script
        # A cluster's keys live on several nodes, each with its pool: redis-py routes them.
        self._pool = None if isinstance(client, RedisCluster) else client.connection_pool
        self._idle: list[Any] = []  # whole connections, each with no reply pending
        self._pid = os.getpid()

    def __call__(self, keys: Sequence[str]) -> Any:
        """The script's reply for ``keys`` (no arguments)."""
        if self._pool is None:
            return self._script(keys=list(keys))
        packed = command(b"EVALSHA", self._script.sha, len(keys), *keys)
        conn = self._take()
        try:
            conn.send_packed_command([packed])
            reply = conn.read_response()
        except NoScriptError:  # a whole reply, read: the connection is sound
            self._idle.append(conn)
            return self._script(keys=list(keys))
        except redis.ConnectionError:
            self._drop(conn)
            return self._script(keys=list(keys))
        except BaseException:
            self._drop(conn)
            raise
        self._idle.append(conn)
        return reply

    def _take(self) -> Any:
        if os.getpid() != self._pid:  # forked: the parent's sockets are not ours
            self._idle, self._pid = [], os.getpid()
        if self._idle:
            return self._idle.pop()
        return self._pool.get_connection()  # type: ignore[union-attr]

    def _drop(self, conn: Any) -> None:
        """Kept, but disconnected: it connects anew (to the primary of now) when next used."""
        conn.disconnect()
        self._idle.append(conn)
