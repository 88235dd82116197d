"""The pure decisions of reconciliation: which event an order's REST state implies given what
Redis holds (:func:`missed_event`), what a pass does with that difference (:func:`judge`:
repair it now, or wait while the stream's own event is in flight), which REST entries are
well-shaped orders (:func:`valid_orders`), which states are in flight (:class:`InFlight`:
delivered by the order stream lately, on their way to Redis rather than missed), and where a
newest-first listing of orders goes on (:func:`next_until`).

No I/O: :mod:`producers.reconciliation` fetches REST pages and Redis hashes and asks these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from producers.buffer import Message

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


def decimal_qty(value: object) -> Decimal | None:
    """A quantity as a Decimal (``"1.50"`` equals ``"1.5"``), None when absent or not a number."""
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except (InvalidOperation, ValueError):
        return None


def missed_event(order: dict[str, Any], held: dict[str, str]) -> dict[str, Any] | None:
    """The ``trade_updates`` data a gap hid, or None when Redis already shows this state.

    ``held`` is the order's hash in Redis (empty when unknown). A change of status or of
    filled quantity means an event was missed; the event carries the order as REST shows
    it, ``timestamp`` = its ``updated_at``, and no ``execution_id`` (REST has none).
    """
    status = str(order.get("status", ""))
    unchanged = held and held.get("status") == status
    if unchanged and decimal_qty(held.get("filled_qty")) == decimal_qty(order.get("filled_qty")):
        return None
    return {
        "event": STATUS_EVENTS.get(status, status),
        "order": order,
        "timestamp": order.get("updated_at"),
    }


IN_FLIGHT_S = 60.0
"""Seconds a state the stream delivered counts as on its way to Redis (queued, or a task
retrying through a failover) rather than missed. With ``RECONCILE_INTERVAL`` 60, a state lost
on its way is repaired by the first pass at least this long after the stream delivered it:
within two minutes of the order's change, inside the contract's three."""


class InFlight:
    """Order states this process's stream handed off lately: not missed, only not yet in Redis.

    Without it a pass that runs while a streamed fill waits out a failover in a retrying
    task sees REST ``filled`` and Redis ``partially_filled``, and publishes a REST copy of
    the fill (no ``execution_id``); the real one, arriving seconds later, is then a
    duplicate of that state and skipped. A state counts as in flight for :data:`IN_FLIGHT_S`
    only: one the pipeline truly lost is still recovered, by a later pass.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: dict[str, tuple[str, Decimal | None, float]] = {}
        self._limit = limit

    def note(self, message: Message) -> None:
        """Called by the order stream's read loop for each ``trade_updates`` data object."""
        order = message.payload.get("order") if isinstance(message.payload, dict) else None
        if not isinstance(order, dict) or not isinstance(order.get("id"), str):
            return
        seen = self._seen
        seen.pop(order["id"], None)  # re-inserted last: the oldest entry goes first
        seen[order["id"]] = (
            str(order.get("status", "")),
            decimal_qty(order.get("filled_qty")),
            time.monotonic(),
        )
        if len(seen) > self._limit:
            seen.pop(next(iter(seen)), None)

    def carries(self, order: dict[str, Any]) -> bool:
        """Whether the stream delivered ``order``'s REST state within :data:`IN_FLIGHT_S`."""
        seen = self._seen.get(order["id"])
        return (
            seen is not None
            and seen[:2] == (str(order.get("status", "")), decimal_qty(order.get("filled_qty")))
            and time.monotonic() - seen[2] < IN_FLIGHT_S
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a pass does with one order whose REST state differs from its hash: ``repair``
    hands ``event`` off now; ``in_flight`` waits, because the stream delivered that state
    lately (the order stays watched, and a later pass repairs it if it never lands)."""

    action: Literal["repair", "in_flight"]
    event: dict[str, Any]


def judge(order: dict[str, Any], held: dict[str, str], in_flight: InFlight) -> Verdict | None:
    """The verdict on ``order`` (REST) against ``held`` (its hash; empty when Redis never saw
    it): None when they agree, else repair now or wait while the stream's event is in flight.

    Only the in-flight window decides the wait, never REST's clock: a state the stream did not
    deliver (an outage, a restart) is repaired at once, and one it delivered but that is still
    missing after :data:`IN_FLIGHT_S` was lost on its way and is repaired too.
    """
    event = missed_event(order, held)
    if event is None:
        return None
    return Verdict("in_flight" if in_flight.carries(order) else "repair", event)


def submitted_at(order: dict[str, Any]) -> datetime | None:
    """The order's ``submitted_at`` (timezone-aware, to the microsecond), None when absent or
    not a time (then no listing can page past it)."""
    try:
        moment = datetime.fromisoformat(str(order["submitted_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return moment if moment.tzinfo is not None else None


def next_until(
    page: list[dict[str, Any]], full: bool, horizon: datetime
) -> tuple[bool, datetime | None]:
    """Where a listing of orders submitted since ``horizon``, newest first, goes on after
    ``page``: ``(done, until)``.

    Alpaca's ``GET /v2/orders`` filters ``after``/``until`` on submission time and has no
    page token, so the next page ends (``until``) at the page's oldest ``submitted_at``, one
    microsecond later: orders sharing that instant are seen whether ``until`` is inclusive
    or not (the overlap is removed by id). Done when the page was not full (nothing older)
    or reached back past ``horizon``; ``until`` None and not done: the page cannot be paged
    past (an order without a submission time), so the listing is incomplete.
    """
    if not full:
        return True, None
    times = [submitted_at(order) for order in page]
    known = [t for t in times if t is not None]
    if not page or len(known) != len(times):
        return False, None
    oldest = min(known)
    if oldest < horizon:
        return True, None
    return False, oldest + timedelta(microseconds=1)


def valid_orders(page: object) -> tuple[list[dict[str, Any]], int]:
    """The well-shaped orders of a REST page, and how many entries were not (pure)."""
    if not isinstance(page, list):
        return [], 1
    good = [o for o in page if isinstance(o, dict) and isinstance(o.get("id"), str) and o["id"]]
    return good, len(page) - len(good)
