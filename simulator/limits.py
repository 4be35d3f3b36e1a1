"""Binance's limits per client IP, and a ledger of every violation, for tests to assert on.

Binance counts per IP: connection attempts (300 per 5 minutes), REST request weight per minute
(6,000), and after a 429 or 418 it expects the IP to stay quiet until ``Retry-After`` has passed
(an IP that keeps calling is banned). The simulator keeps each per IP and records a violation
each time a client goes past one: ``GET /_sim/violations`` reports them (simulator/control.py).

A call read within ``IN_FLIGHT_GRACE_S`` of a refusal is not counted as ignoring it: it may have
been on its way before the client could know (several clients behind one IP learn of a refusal
only through each other, and a busy client or simulator loop delays a call by a second at times).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

from simulator.config import SimConfig

CONNECTIONS, WEIGHT, RETRY_AFTER = "connections", "weight", "retry_after"
KINDS = (CONNECTIONS, WEIGHT, RETRY_AFTER)
IN_FLIGHT_GRACE_S = 2.0
WEIGHT_WINDOW_S = 60.0
EVENTS_KEPT = 500


class IpLimits:
    """Per-IP windows of connection attempts and REST weight, and the waits told to each IP."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._attempts: dict[str, deque[float]] = {}
        self._weight: dict[str, deque[tuple[float, int]]] = {}
        # IP -> (when it was told to wait, until when): monotonic seconds.
        self._told: dict[str, tuple[float, float]] = {}
        self.violations: Counter[tuple[str, str]] = Counter()
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.peak_connections: dict[str, int] = {}
        self.peak_weight: dict[str, int] = {}

    def attempt(self, ip: str) -> bool:
        """Count a connection attempt of ``ip``; False (and a violation) past the window's limit."""
        now = time.monotonic()
        self._check_told(ip, now, "a connection attempt")
        attempts = self._attempts.setdefault(ip, deque())
        while attempts and now - attempts[0] > self.config.connection_window_s:
            attempts.popleft()
        if len(attempts) >= self.config.max_connections_per_window:
            self._violate(ip, CONNECTIONS, f"attempt {len(attempts) + 1} in the window")
            return False
        attempts.append(now)
        self.peak_connections[ip] = max(self.peak_connections.get(ip, 0), len(attempts))
        return True

    def spend(self, ip: str, weight: int) -> int:
        """Add a REST request's weight to ``ip``'s last minute; returns the minute's total (a
        violation when past the limit)."""
        now = time.monotonic()
        self._check_told(ip, now, "a REST request")
        spent = self._weight.setdefault(ip, deque())
        spent.append((now, weight))
        while spent and now - spent[0][0] > WEIGHT_WINDOW_S:
            spent.popleft()
        used = sum(w for _, w in spent)
        self.peak_weight[ip] = max(self.peak_weight.get(ip, 0), used)
        if used > self.config.rest_weight_limit:
            self._violate(ip, WEIGHT, f"weight {used} in the minute")
        return used

    def told_to_wait(self, ip: str, retry_after_s: float) -> None:
        """``ip`` was answered 429/418 with this ``Retry-After``."""
        now = time.monotonic()
        _, until = self._told.get(ip, (now, now))
        self._told[ip] = (now, max(until, now + retry_after_s))

    def attempts(self, ip: str | None = None) -> int:
        """Connection attempts in the current window (of one IP, or all)."""
        return sum(len(q) for i, q in self._attempts.items() if ip is None or i == ip)

    def report(self) -> dict[str, Any]:
        """What ``GET /_sim/violations`` answers."""
        by_ip: dict[str, dict[str, int]] = {}
        for (ip, kind), n in self.violations.items():
            by_ip.setdefault(ip, dict.fromkeys(KINDS, 0))[kind] = n
        return {
            "total": sum(self.violations.values()),
            "by_ip": by_ip,
            "events": list(self.events),
            "peak": {"connections": self.peak_connections, "weight": self.peak_weight},
            "limits": {
                "connections": self.config.max_connections_per_window,
                "connection_window_s": self.config.connection_window_s,
                "weight": self.config.rest_weight_limit,
            },
        }

    def _check_told(self, ip: str, now: float, what: str) -> None:
        told = self._told.get(ip)
        if told is not None and told[0] + IN_FLIGHT_GRACE_S < now < told[1]:
            self._violate(ip, RETRY_AFTER, f"{what} {told[1] - now:.1f} s before Retry-After ended")

    def _violate(self, ip: str, kind: str, detail: str) -> None:
        self.violations[ip, kind] += 1
        self.events.append({"at": time.time(), "ip": ip, "kind": kind, "detail": detail})
