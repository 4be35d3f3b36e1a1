"""Redis commands as the bytes Redis reads (RESP), for callers that send them on a connection
themselves (``Connection.send_packed_command``) rather than through redis-py's generic packer,
which checks and encodes every argument anew on every call: the messenger's writer
(messenger.writer, thousands of commands a second) and the server's reads (contract.packed_script).
"""

from __future__ import annotations


def command(*args: bytes | str | int) -> bytes:
    """Any command: each argument bytes, text (UTF-8) or an integer."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)
