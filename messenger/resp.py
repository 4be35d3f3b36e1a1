"""Redis commands as the bytes Redis reads (RESP), built straight from what the writer holds.

The writer sends thousands of commands a second, nearly all ``SET key value PX ttl``. redis-py packs
each one generically (every argument checked and encoded, then hiredis), about as costly as all
the rest the writer does for a value; here a ``SET`` is one bytes formatting. The bytes go out
through redis-py's connection (``send_packed_command``), whose replies are read as usual. Any
other command is packed by contract.resp.
"""

from __future__ import annotations

_SET_PX = b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nPX\r\n$%d\r\n%b\r\n"


def set_px(key: bytes, value: bytes, ttl_ms: bytes) -> bytes:
    """``SET key value PX ttl_ms``; ``ttl_ms`` as ASCII digits."""
    return _SET_PX % (len(key), key, len(value), value, len(ttl_ms), ttl_ms)
