"""Baseline readers for the ingest benchmark, run as their own processes (one core's worth each).

    python -m bench.baselines ceiling <ws_url> <seconds> <stream>...
    python -m bench.baselines poc <ws_url> <seconds> <redis_url> <stream>...
    python -m bench.baselines first <ws_url> <seconds> <stream>...

``ceiling``: a bare websocket-client receive loop, nothing else: the fastest any reader of this
feed with this library can be. ``poc``: the proof of concept's pattern: per frame, parse it,
write one JSON document, then set its expiry in a second command. Both subscribe the same way
the messenger does (at most 1,024 streams a connection, a thread per connection) and print
one JSON line: frames read and CPU seconds used (the ingest benchmark runs them for a day and stops
them itself, measuring them from outside: bench/ingest.py). ``first`` (the scale benchmark's baseline)
reads until every stream has sent a frame, and says how long that took and its peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from collections.abc import Callable

import redis
import websocket

STREAMS_PER_CONNECTION = 1024


def read(
    ws_url: str,
    streams: list[str],
    seconds: float,
    on_frame: Callable[[bytes], None],
    done: threading.Event | None = None,
) -> int:
    """Read frames for ``seconds`` (or until ``done``) over as many connections as the streams
    need; frames read."""
    counts: list[int] = []
    deadline = time.monotonic() + seconds
    done = done or threading.Event()
    groups = [streams[i : i + STREAMS_PER_CONNECTION] for i in range(0, len(streams), STREAMS_PER_CONNECTION)]

    def run(group: list[str]) -> None:
        ws = websocket.create_connection(f"{ws_url}/stream?streams={group[0]}", skip_utf8_validation=True)
        if len(group) > 1:
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": group[1:], "id": 1}))
        n = 0
        recv = ws.recv_data_frame
        while time.monotonic() < deadline and not done.is_set():
            opcode, frame = recv(True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                on_frame(frame.data)
                n += 1
        counts.append(n)
        ws.close(timeout=0.1)

    threads = [threading.Thread(target=run, args=(g,)) for g in groups]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def main(argv: list[str]) -> int:
    """Run one baseline and print its result."""
    mode, ws_url, seconds = argv[0], argv[1], float(argv[2])
    cpu0 = time.process_time()
    if mode == "ceiling":
        frames = read(ws_url, argv[3:], seconds, lambda data: None)
    elif mode == "first":
        started, unseen, lock, done = time.monotonic(), set(argv[3:]), threading.Lock(), threading.Event()

        def first(data: bytes) -> None:
            stream = json.loads(data).get("stream")
            with lock:
                unseen.discard(stream)
                if not unseen:
                    done.set()

        frames = read(ws_url, argv[3:], seconds, first, done)
        elapsed = time.monotonic() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"seconds_until_all_seen": elapsed, "unseen": len(unseen), "rss_peak_mb": peak_mb}))
        return 0
    else:
        client = redis.Redis.from_url(argv[3])

        def poc(data: bytes) -> None:
            msg = json.loads(data)
            if "stream" not in msg:
                return
            key = "poc:" + msg["stream"]
            client.set(key, json.dumps(msg["data"]))
            client.expire(key, 1)

        frames = read(ws_url, argv[4:], seconds, poc)
    print(json.dumps({"frames": frames, "cpu_s": time.process_time() - cpu0, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
