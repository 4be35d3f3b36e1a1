"""The exchange's clock: epoch milliseconds that never go back.

Trades are stamped with it and kline windows are closed by it, so a trade can never land in a
window whose closing frame was already sent, whatever the system clock does meanwhile.
"""

from __future__ import annotations

import time

_EPOCH_OFFSET_S = time.time() - time.monotonic()


def now_ms() -> int:
    """Epoch ms, monotonic."""
    return int((time.monotonic() + _EPOCH_OFFSET_S) * 1000)
