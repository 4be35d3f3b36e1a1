"""Whether this server process is stopping (a graceful stop, SIGTERM).

Set by server.gevent_worker; read by live push (server.push), whose streams then end within a
poll (the client reconnects, ``retry: 1000``, to a process still serving) instead of holding the
stop for its whole timeout. Nothing is imported here: the worker class is loaded by gunicorn's
master before gevent patches the standard library.
"""

from __future__ import annotations


class Shutdown:
    """The process-wide flag."""

    stopping = False
