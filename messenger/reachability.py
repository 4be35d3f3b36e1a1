"""Whether Binance answers, said once in plain words when it does not, and again when it does.

Each failed attempt is also logged where it happens (a connection, the symbol list), one line per
retry. This says what a user needs to know once per outage and per endpoint: Binance is
unreachable, at which URL, what failed, that the messenger keeps retrying, and that ``make demo``
runs offline. The heartbeat carries the failures still unresolved, for /readyz and the status page.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

WEBSOCKET, REST = "websocket", "rest"
OFFLINE_HINT = "without network access, `make demo` runs everything against the bundled simulator"


class Reachability:
    """The last failure of each way to Binance (WebSocket, REST) since it last worked."""

    def __init__(self) -> None:
        self._failures: dict[str, str] = {}
        self._lock = threading.Lock()

    def failed(self, channel: str, url: str, what: str) -> None:
        """An attempt to reach ``url`` failed with ``what``; the caller retries."""
        failure = f"{url}: {what}"
        with self._lock:
            new = channel not in self._failures
            self._failures[channel] = failure
        if new:
            logger.warning("binance: unreachable: %s. Retrying with backoff; %s.", failure, OFFLINE_HINT)

    def reached(self, channel: str, url: str) -> None:
        """``url`` answered."""
        with self._lock:
            was_down = self._failures.pop(channel, None) is not None
        if was_down:
            logger.info("binance: %s answers again", url)

    def failures(self) -> list[str]:
        """What failed, with its URL, on each way to Binance that has not worked since."""
        with self._lock:
            return list(self._failures.values())
