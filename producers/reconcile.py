"""What reconciliation decides, as pure functions: which event a REST order state implies."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

FINAL_STATUSES = frozenset(
    {"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"}
)

# An order's REST status -> the trade_updates event that leads to it.
STATUS_EVENTS = {
    "new": "new",
    "accepted": "accepted",
    "pending_new": "pending_new",
    "partially_filled": "partial_fill",
    "filled": "fill",
    "done_for_day": "done_for_day",
    "canceled": "canceled",
    "expired": "expired",
    "replaced": "replaced",
    "pending_cancel": "pending_cancel",
    "pending_replace": "pending_replace",
    "rejected": "rejected",
    "suspended": "suspended",
    "stopped": "stopped",
    "calculated": "calculated",
}


def _qty(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def missed_event(order: dict[str, Any], held: dict[str, str]) -> dict[str, Any] | None:
    """The ``trade_updates`` data a gap hid, or None when Redis already shows this state.

    ``held`` is the order's hash in Redis (empty when unknown). A change of status or of
    filled quantity means an event was missed; the event carries the order as REST shows
    it, ``timestamp`` = its ``updated_at``, and no ``execution_id`` (REST has none).
    """
    status = str(order.get("status", ""))
    unchanged = held and held.get("status") == status
    if unchanged and _qty(held.get("filled_qty")) == _qty(order.get("filled_qty")):
        return None
    return {
        "event": STATUS_EVENTS.get(status, status),
        "order": order,
        "timestamp": order.get("updated_at"),
    }
