"""Records stored as the messenger stores them, for tests that stand in for it."""

from __future__ import annotations

from typing import Any

import redis

from contract.keys import voucher_key
from contract.records import AS_OF, VOUCHER, encode_record

RUN = "tests"


def vouched(client: redis.Redis, key: str, record: dict[str, Any], px: int | None = None) -> None:
    """Store ``record`` under ``key`` with a live voucher (its connection, alive for ``px`` ms)."""
    voucher = voucher_key(RUN, int(record.get("connection", 1)))
    client.set(voucher, int(record[AS_OF]), px=px)
    client.set(key, encode_record({VOUCHER: voucher, **record}))
