"""Whole numbers from query strings, the way the APIs document them: ASCII digits only, and few.

Python's ``int()`` takes any Unicode digit (``int("٣") == 3``), ``str.isdigit()`` says yes to
``"²"`` and ``"①"`` (which ``int()`` then refuses), and thousands of digits exceed ``int()``'s
limit: none of that may reach a view as anything but the parameter's documented 400.
"""

from __future__ import annotations

import re

# Binance's own rule for a numeric parameter (its -1100 message quotes it).
MAX_DIGITS = 20
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


def whole_number(raw: str) -> int | None:
    """The value of 1 to MAX_DIGITS ASCII digits; None for anything else."""
    if _DIGITS.fullmatch(raw) is None:
        return None
    return int(raw)
