"""A lock-free latency histogram: observed on one thread, read by the metrics scrape."""

from __future__ import annotations

from bisect import bisect_left

# Seconds: frame received -> value acknowledged by Redis.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    """Counts per bucket (upper bounds), plus the sum and count, in Prometheus's terms."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def observe_many(self, values: list[float]) -> None:
        """Count each of ``values``."""
        counts, buckets = self.counts, self.buckets
        for value in values:
            counts[bisect_left(buckets, value)] += 1
        self.sum += sum(values)
        self.count += len(values)

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it), ending with +Inf."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out
