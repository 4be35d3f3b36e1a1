"""A record's order as Redis compares it: fixed-width digits, so that a write can be refused there.

Several messengers may write the same key (replicas of a stream, or the old and the new owner
during a handover). Each stream orders its values (messenger.binance: a parser returns the order
of each update); a value must never go back, whoever writes it. So each record carries its order
(contract.records.ORDER, right after the vouchers), and the writer's script (messenger.conditional)
compares it with the stored record's before it replaces anything, without parsing JSON.

The encoding: each part of the order (an int, or each int of a tuple) as ORDER_DIGITS decimal
digits, zero-padded, concatenated. Two orders of one kind then compare as strings exactly as
they compare as numbers (digits only: no separator whose collation could differ). An empty
string is no order (a REST seed without one).

What each kind orders by (the same on every member: all of it comes from Binance):

| kind | order |
|---|---|
| bookTicker | ``u``, the order book update id |
| trade, aggTrade | the trade id (``t``, ``a``) |
| kline_* | (open time ``t``, event time ``E``, trades ``n``) |
| miniTicker, ticker, ticker_*, avgPrice | the event time ``E`` |
| depth5/10/20 | ``lastUpdateId`` |
| depth (a local book) | (update id, levels written, levels held): see ``book_order`` |
"""

from __future__ import annotations

from typing import Any

ORDER_DIGITS = 20
ORDER_LIMIT = 10**ORDER_DIGITS
# An int order's encoding, for a hot path that inlines encode_order's first case (``INT_ORDER % n``).
INT_ORDER = f"%0{ORDER_DIGITS}d"
NO_ORDER = ""


def encode_order(order: Any) -> str:
    """The order as Redis compares it: ``42`` -> ``"00000000000000000042"``; None -> NO_ORDER.

    ``order`` is an int or a tuple of ints, each from 0 to 10**ORDER_DIGITS - 1.
    """
    if order is None:
        return NO_ORDER
    if type(order) is int and 0 <= order < ORDER_LIMIT:
        return INT_ORDER % order
    if type(order) is tuple and order and all(type(p) is int and 0 <= p < ORDER_LIMIT for p in order):
        return "".join([INT_ORDER % p for p in order])
    raise ValueError(f"not an order: {order!r}")


def book_order(update_id: int, levels: int, held: int) -> tuple[int, int, int]:
    """The order of a local order book's record (contract.order_book), the same on every member.

    First the update id: a later book is newer. At one update id, the deeper tier written
    (``levels``) is newer: it was asked for since. At one update id and tier, the record holding
    more levels (``held``, both sides) is newer: every level held is exact, so two books at the
    same update id differ only in how deep they are known, and the deeper one says more. A
    member's count of its own refreshed books is not part of it: it means nothing to another.
    """
    return update_id, levels, held
