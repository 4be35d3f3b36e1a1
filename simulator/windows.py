"""Kline windows as Binance cuts them: UTC (or a ``timeZone``), weeks from Monday, calendar months.

- ``1s`` to ``1d``: multiples of the interval since the epoch, shifted by the time zone.
- ``3d``: Binance documents no alignment; epoch-aligned (open times divisible by 3 days, in the
  time zone's local time), the same rule as the shorter ones.
- ``1w``: Monday 00:00 to Monday 00:00 (local time).
- ``1M``: the calendar month (local time): 28 to 31 days.

Open times are always epoch milliseconds (UTC): with ``timeZone=8`` a ``1d`` window opens at
16:00 UTC.
"""

from __future__ import annotations

import datetime
import re

INTERVALS = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)  # fmt: skip
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_FIXED_MS = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": DAY_MS, "3d": 3 * DAY_MS,
}  # fmt: skip
_MONDAY_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday; 1970-01-05 a Monday
_EPOCH = datetime.date(1970, 1, 1).toordinal()
# Binance: hours and minutes (-1:00, 05:45) or hours only (0, 8, 4), from -12:00 to +14:00.
_TIME_ZONE = re.compile(r"^([+-]?)([0-9]{1,2})(?::([0-9]{2}))?$")


def parse_time_zone(text: str) -> int | None:
    """``timeZone`` as an offset in ms (``"8"`` -> 28,800,000; ``"-1:30"`` -> -5,400,000); None if invalid."""
    match = _TIME_ZONE.match(text)
    if match is None:
        return None
    sign, hours, minutes = match[1], int(match[2]), int(match[3] or 0)
    if minutes >= 60:
        return None
    offset = (hours * 60 + minutes) * 60_000 * (-1 if sign == "-" else 1)
    if not -12 * 3_600_000 <= offset <= 14 * 3_600_000:
        return None
    return offset


def stream_time_zone(suffix: str) -> int:
    """The offset of a kline stream's time zone suffix (``"+08:00"``, or ``""`` for UTC)."""
    return 0 if not suffix else parse_time_zone(suffix) or 0


def _month_start(local_ms: int, months_ahead: int = 0) -> int:
    day = datetime.date.fromordinal(_EPOCH + local_ms // DAY_MS)
    index = day.year * 12 + day.month - 1 + months_ahead
    first = datetime.date(index // 12, index % 12 + 1, 1)
    return (first.toordinal() - _EPOCH) * DAY_MS


def open_of(t: int, interval: str, offset_ms: int = 0) -> int:
    """The open time of the window ``t`` falls in."""
    local = t + offset_ms
    size = _FIXED_MS.get(interval)
    if size is not None:
        return local - local % size - offset_ms
    if interval == "1w":
        return local - (local - _MONDAY_MS) % WEEK_MS - offset_ms
    return _month_start(local) - offset_ms


def next_open(start: int, interval: str, offset_ms: int = 0) -> int:
    """The open time of the window after the one opening at ``start`` (its close time + 1)."""
    size = _FIXED_MS.get(interval)
    if size is not None:
        return start + size
    if interval == "1w":
        return start + WEEK_MS
    return _month_start(start + offset_ms, 1) - offset_ms


def previous_open(start: int, interval: str, offset_ms: int = 0) -> int:
    """The open time of the window before the one opening at ``start``."""
    return open_of(start - 1, interval, offset_ms)
