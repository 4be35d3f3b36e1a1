"""Whether a new connection to Binance may be opened now: only what Binance counts per IP.

Binance limits new WebSocket connections per IP (300 attempts per 5 minutes) and answers an IP
that asks too much with HTTP 429, or 418 once it bans it, each with a ``Retry-After``. Those hold
back every new connection. What happens to one connection (a drop, a 1008 close) does not: that
is its own backoff's business (see messenger/supervisor.py).

With an egress (messenger.egress) the budget and the back-off are those every member behind the
same address shares, in Redis; without one (unit tests), a local window of this process alone.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from messenger.egress import BACKOFF, UNREACHABLE, Egress
from messenger.rest import retry_after_s

logger = logging.getLogger(__name__)

# Binance allows 300 connection attempts per 5 minutes per IP; keep a margin for restarts.
CONNECTIONS_PER_WINDOW = 250
CONNECTION_WINDOW_S = 300.0
# When the budget is spent, look again this much later.
BUDGET_RETRY_S = 1.0
# When the shared budget frees a slot in a moment, look again no sooner than this.
BUDGET_MIN_WAIT_S = 0.1
# Handshake answers that speak for the whole IP: rate limited, and banned.
IP_WIDE_STATUSES = (429, 418)
BUDGET_WHY = "the connection budget"


class ConnectionBudget:
    """A sliding window of connection attempts."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._attempts: deque[float] = deque()

    def take(self, now: float) -> bool:
        """Spend one attempt if the window allows it."""
        while self._attempts and now - self._attempts[0] >= self.window_s:
            self._attempts.popleft()
        if len(self._attempts) >= self.limit:
            return False
        self._attempts.append(now)
        return True


class Admission:
    """The IP-wide gate in front of every new connection."""

    def __init__(self, rest_wait_until: Callable[[], float], egress: Egress | None = None) -> None:
        """``rest_wait_until``: until when the REST client was told to wait (monotonic)."""
        self.budget = ConnectionBudget(CONNECTIONS_PER_WINDOW, CONNECTION_WINDOW_S)
        self.egress = egress
        self._rest_wait_until = rest_wait_until
        self._refused_until = 0.0
        self._budget_until = 0.0
        self._budget_why = BUDGET_WHY
        self._spent_said = False

    def refused(self, status: int | None, retry_after: str | None, now: float) -> float | None:
        """A handshake was refused with ``status``: if that speaks for the IP, hold every new
        connection for its ``Retry-After``; returns that wait, or None when it does not."""
        if status not in IP_WIDE_STATUSES:
            return None
        wait_s = retry_after_s(retry_after)
        self._refused_until = max(self._refused_until, now + wait_s)
        if self.egress is not None:
            self.egress.back_off(wait_s)
        return wait_s

    def take(self, now: float) -> bool:
        """Spend one connection attempt of the budget, if it allows one now."""
        if self.egress is not None:
            return self._take_shared(self.egress, now)
        if self.budget.take(now):
            return True
        logger.warning("conn: connection budget spent (%d per %.0f s); no new connection for %.0f s",
                       CONNECTIONS_PER_WINDOW, CONNECTION_WINDOW_S, BUDGET_RETRY_S)  # fmt: skip
        self._budget_until, self._budget_why = now + BUDGET_RETRY_S, BUDGET_WHY
        return False

    def _take_shared(self, egress: Egress, now: float) -> bool:
        grant = egress.take_connection()
        if grant.granted:
            self._spent_said = False
            return True
        if grant.why == BACKOFF:
            why = f"Binance's Retry-After (shared by egress {egress.name})"
        elif grant.why == UNREACHABLE:
            why = f"Redis (egress {egress.name}'s budget is held there)"
        else:
            why = BUDGET_WHY
            if not self._spent_said:  # once until a connection is let in again, not every look
                self._spent_said = True
                logger.warning("conn: connection budget of egress %s spent (%d per %.0f s); no new "
                               "connection for %.1f s", egress.name, egress.connections,
                               egress.connection_window_ms / 1000, grant.wait_s)  # fmt: skip
        self._budget_until, self._budget_why = now + max(grant.wait_s, BUDGET_MIN_WAIT_S), why
        return False

    def closed_until(self) -> tuple[float, str]:
        """Until when no new connection may be opened (monotonic), and what it waits for."""
        return max(
            (self._refused_until, "Binance's Retry-After"),
            (self._rest_wait_until(), "Binance's Retry-After on REST"),
            (self._budget_until, self._budget_why),
        )

    def is_open(self, now: float) -> bool:
        """Whether a new connection may be opened now."""
        return now >= self.closed_until()[0]
