"""The hub of live push: one Redis pub/sub connection per process, fanning updates out to clients.

Each worker process has one hub. It subscribes to the channels named after the keys its clients
follow (the messenger publishes each new record of a followed key on it, an empty message when the
value is withdrawn), and lists those keys in ``transmute:watched`` so that the messenger publishes
them, and only them. server.push's followers read their messages from the hub's queues.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

import redis

from contract.keys import DEMAND_CHANNEL, WATCHED_KEY
from contract.redis_client import publish, recover

logger = logging.getLogger(__name__)

POLL_S = 0.25
WATCH_TTL_S = 30.0  # a hub that stops renewing its keys (crashed) is forgotten after this
RENEW_S = 10.0
QUEUE_SIZE = 64


class Hub:
    """One Redis pub/sub connection per process, fanning updates out to live-push clients."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._queues: dict[str, set[queue.Queue[bytes]]] = {}
        self._changes: queue.Queue[tuple[bool, str]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, key: str) -> queue.Queue[bytes]:
        """Follow a key: its messages arrive on the returned queue until ``unwatch``."""
        inbox: queue.Queue[bytes] = queue.Queue(QUEUE_SIZE)
        with self._lock:
            first = key not in self._queues
            self._queues.setdefault(key, set()).add(inbox)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="push-hub", daemon=True)
                self._thread.start()
        if first:
            self._changes.put((True, key))
            self._register([key], wake=True)
        return inbox

    def unwatch(self, key: str, inbox: queue.Queue[bytes]) -> None:
        """Stop following a key for this client."""
        with self._lock:
            inboxes = self._queues.get(key)
            if inboxes is None:
                return
            inboxes.discard(inbox)
            if inboxes:
                return
            del self._queues[key]
        self._changes.put((False, key))

    def _register(self, keys: list[str], wake: bool = False) -> None:
        """Tell the messenger these keys are followed (for WATCH_TTL_S), so it publishes them."""
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(WATCHED_KEY, dict.fromkeys(keys, int((time.time() + WATCH_TTL_S) * 1000)))
        if wake:
            publish(pipe, DEMAND_CHANNEL, "watch")
        try:
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("push: could not register followed keys (%s)", exc)

    def _run(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                with self._lock:
                    keys = list(self._queues)
                pubsub.subscribe(*keys, "transmute:hub")  # one channel always, so it can listen
                renewed = time.monotonic()
                while True:
                    self._apply_changes(pubsub)
                    message = pubsub.get_message(timeout=POLL_S)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
                    if time.monotonic() - renewed >= RENEW_S:
                        with self._lock:
                            self._register(list(self._queues))
                        renewed = time.monotonic()
            except redis.RedisError as exc:
                logger.warning("push: pub/sub connection lost (%s); reconnecting", exc)
                recover(self.client)
                time.sleep(1.0)
            finally:
                pubsub.close()

    def _apply_changes(self, pubsub: Any) -> None:
        while True:
            try:
                add, key = self._changes.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                followed = key in self._queues
            if add and followed:
                pubsub.subscribe(key)
            elif not add and not followed:
                pubsub.unsubscribe(key)

    def _dispatch(self, channel: bytes | str, data: bytes) -> None:
        key = channel.decode() if isinstance(channel, bytes) else channel
        with self._lock:
            inboxes = list(self._queues.get(key, ()))
        for inbox in inboxes:
            # A slow client misses an intermediate value; the next one supersedes it.
            with contextlib.suppress(queue.Full):
                inbox.put_nowait(data)
