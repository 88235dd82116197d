"""The one order book behind both the REST endpoints and the ``trade_updates`` stream.

Thread-safe: tests drive it from their own thread while the server reads it on its loop.
Every change emits its ``trade_updates`` envelope to the listeners (the trading sessions)
while the lock is held, so streamed events keep the order of the changes; a change made
while no trading session listens is visible in REST only, as on the real service.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from simulator import account, orders
from simulator.clock import now_ns, parse_time, rfc3339
from simulator.orders import Order

Envelope = dict[str, Any]
Listener = Callable[[Envelope], object]
_STATUS_OF_EVENT = {
    "pending_new": "pending_new",
    "accepted": "accepted",
    "new": "new",
    "partial_fill": "partially_filled",
    "fill": "filled",
    "pending_cancel": "pending_cancel",
    "canceled": "canceled",
    "pending_replace": "pending_replace",
    "replaced": "replaced",
    "rejected": "rejected",
    "expired": "expired",
    "done_for_day": "done_for_day",
}
_STAMP_OF_EVENT = {
    "canceled": "canceled_at",
    "expired": "expired_at",
    "rejected": "failed_at",
    "replaced": "replaced_at",
    "fill": "filled_at",
}


class OrderError(ValueError):
    """An order operation the book refuses (unknown order, order already closed, ...)."""


class OrderBook:
    """Orders, positions, fills and the account, with lifecycle operations."""

    def __init__(
        self,
        *,
        cash: Decimal = Decimal("100000"),
        price_of: Callable[[str], float | None] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._orders: dict[str, Order] = {}
        self._submitted: dict[str, int] = {}
        self._positions: dict[str, Decimal] = {}
        self._fills: list[tuple[int, dict[str, Any]]] = []
        self._events: list[Envelope] = []
        self._listeners: list[Listener] = []
        self._cash = cash
        self._price_of = price_of or (lambda _symbol: None)
        self._account_id = str(uuid.uuid4())
        self._created = now_ns()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(envelope)`` for every event from now on."""
        with self._lock:
            self._listeners.append(listener)

    def _emit(self, event: str, order: Order, ts: int, **extra: str | None) -> Envelope:
        order["status"] = _STATUS_OF_EVENT.get(event, order["status"])
        order["updated_at"] = rfc3339(ts)
        if event in _STAMP_OF_EVENT:
            order[_STAMP_OF_EVENT[event]] = order["updated_at"]
        envelope = orders.trade_update(event, order, ts, **extra)
        self._events.append(envelope)
        for listener in self._listeners:
            listener(envelope)
        return envelope

    def _open(self, order_id: str) -> Order:
        order = self._orders.get(str(order_id))
        if order is None:
            raise OrderError(f"order not found for {order_id}")
        if order["status"] not in orders.OPEN_STATUSES:
            raise OrderError(f"order {order_id} is {order['status']}")
        return order

    def submit(self, symbol: str, *, events: Iterable[str] = ("new",), **fields: Any) -> Order:
        """Create an order (``orders.new_order`` fields) and emit ``events`` in turn
        (any of ``pending_new``, ``accepted``, ``new``; none for a silent creation)."""
        with self._lock:
            ts = now_ns()
            order = orders.new_order(symbol=symbol, ts_ns=ts, status="pending_new", **fields)
            self._orders[order["id"]] = order
            self._submitted[order["id"]] = ts
            emitted = False
            for event in events:
                self._emit(event, order, now_ns())
                emitted = True
            if not emitted:
                order["status"] = "new"
            return dict(order)

    def fill(self, order_id: str, qty: str | None = None, price: str | None = None) -> Envelope:
        """Execute ``qty`` (default: all that remains) at ``price`` (default: the limit
        price, else the market's price): a ``partial_fill`` or the final ``fill``."""
        with self._lock:
            order = self._open(order_id)
            px = Decimal(price) if price is not None else self._default_price(order)
            filled = Decimal(order["filled_qty"])
            total = Decimal(order["qty"]) if order["qty"] is not None else None
            if total is None:  # notional order: it fills in one go
                total = (Decimal(order["notional"]) / px).quantize(Decimal("1e-9"))
                order["qty"] = orders.decimal_text(total)
            size = Decimal(qty) if qty is not None else total - filled
            if size <= 0 or filled + size > total:
                raise OrderError(f"cannot fill {size} of {order_id}: {total - filled} remain")
            average = Decimal(order["filled_avg_price"] or 0)
            cum = filled + size
            order["filled_qty"] = orders.decimal_text(cum)
            order["filled_avg_price"] = orders.decimal_text((average * filled + px * size) / cum)
            signed = size if order["side"] == "buy" else -size
            position = self._positions.get(order["symbol"], Decimal(0)) + signed
            self._positions[order["symbol"]] = position
            self._cash -= signed * px
            event = "fill" if cum == total else "partial_fill"
            ts = now_ns()
            envelope = self._emit(
                event,
                order,
                ts,
                execution_id=str(uuid.uuid4()),
                price=orders.decimal_text(px),
                qty=orders.decimal_text(size),
                position_qty=orders.decimal_text(position),
            )
            self._fills.append((ts, account.fill_activity(order, event, ts, px, size, total - cum)))
            return envelope

    def _default_price(self, order: Order) -> Decimal:
        if order["limit_price"] is not None:
            return Decimal(order["limit_price"])
        market = self._price_of(order["symbol"])
        return Decimal(str(round(market, 2))) if market else Decimal("100")

    def cancel(self, order_id: str, *, pending: bool = False) -> Envelope:
        """Cancel an open order (``pending_cancel`` first when ``pending``)."""
        with self._lock:
            order = self._open(order_id)
            if pending:
                self._emit("pending_cancel", order, now_ns())
            return self._emit("canceled", order, now_ns())

    def replace(self, order_id: str, *, pending: bool = False, **changes: Any) -> Order:
        """Replace an open order: ``replaced`` on the old one, ``new`` on its replacement
        (which ``replaces`` the old id). ``changes``: qty, limit_price, stop_price,
        time_in_force, client_order_id."""
        with self._lock:
            old = self._open(order_id)
            fields = {
                "qty": old["qty"],
                "notional": old["notional"],
                "side": old["side"],
                "order_type": old["type"],
                "time_in_force": old["time_in_force"],
                "limit_price": old["limit_price"],
                "stop_price": old["stop_price"],
                "extended_hours": old["extended_hours"],
            }
            fields.update(changes)
            ts = now_ns()
            new = orders.new_order(symbol=old["symbol"], ts_ns=ts, replaces=old["id"], **fields)
            self._orders[new["id"]] = new
            self._submitted[new["id"]] = ts
            if pending:
                self._emit("pending_replace", old, now_ns())
            old["replaced_by"] = new["id"]
            self._emit("replaced", old, now_ns())
            self._emit("new", new, now_ns())
            return dict(new)

    def reject(self, order_id: str) -> Envelope:
        """Reject an order that has not traded yet."""
        return self._end(order_id, "rejected")

    def expire(self, order_id: str) -> Envelope:
        """Expire an open order (end of its time in force)."""
        return self._end(order_id, "expired")

    def done_for_day(self, order_id: str) -> Envelope:
        """Mark an open order done for the day."""
        return self._end(order_id, "done_for_day")

    def _end(self, order_id: str, event: str) -> Envelope:
        with self._lock:
            return self._emit(event, self._open(order_id), now_ns())

    def ingest(self, envelope: Envelope) -> None:
        """Take a recorded ``trade_updates`` envelope's order as the book's state (replay)."""
        order = envelope.get("data", {}).get("order")
        if not isinstance(order, dict) or "id" not in order:
            return
        with self._lock:
            self._orders[order["id"]] = dict(order)
            if order["id"] not in self._submitted:
                try:
                    submitted = parse_time(order["submitted_at"])
                except (KeyError, TypeError, ValueError):  # a recording's odd order
                    submitted = now_ns()
                self._submitted[order["id"]] = submitted

    def get(self, order_id: str) -> Order | None:
        """A copy of the order with id ``order_id``, or None."""
        with self._lock:
            order = self._orders.get(str(order_id))
            return dict(order) if order else None

    def by_client_order_id(self, client_order_id: str) -> Order | None:
        """A copy of the latest order with ``client_order_id``, or None."""
        with self._lock:
            for order in reversed(self._orders.values()):
                if order["client_order_id"] == client_order_id:
                    return dict(order)
            return None

    def query(
        self,
        *,
        status: str = "open",
        after_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 50,
        direction: str = "desc",
        symbols: Iterable[str] | None = None,
        side: str | None = None,
    ) -> list[Order]:
        """``GET /v2/orders``: filter by status class, submission time (``after``
        exclusive, ``until`` inclusive), symbols and side; sort by submission time."""
        wanted = set(symbols) if symbols else None
        with self._lock:
            rows = [
                (self._submitted[oid], dict(order))
                for oid, order in self._orders.items()
                if (
                    status == "all"
                    or (order["status"] in orders.OPEN_STATUSES) == (status == "open")
                )
                and (after_ns is None or self._submitted[oid] > after_ns)
                and (until_ns is None or self._submitted[oid] <= until_ns)
                and (wanted is None or order["symbol"] in wanted)
                and (side is None or order["side"] == side)
            ]
        rows.sort(key=lambda row: row[0], reverse=direction == "desc")
        return [order for _, order in rows[:limit]]

    def fill_activities(
        self,
        *,
        after_ns: int | None = None,
        until_ns: int | None = None,
        direction: str = "desc",
        page_size: int = 100,
        page_token: str | None = None,
    ) -> list[dict[str, Any]]:
        """``GET /v2/account/activities/FILL``: fills by transaction time, paged by id."""
        with self._lock:
            rows = [
                (ts, dict(act))
                for ts, act in self._fills
                if (after_ns is None or ts > after_ns) and (until_ns is None or ts <= until_ns)
            ]
        rows.sort(key=lambda row: row[0], reverse=direction == "desc")
        acts = [act for _, act in rows]
        if page_token is not None:
            ids = [act["id"] for act in acts]
            acts = acts[ids.index(page_token) + 1 :] if page_token in ids else []
        return acts[:page_size]

    def events(self) -> list[Envelope]:
        """Every ``trade_updates`` envelope emitted so far, in order."""
        with self._lock:
            return list(self._events)

    def positions(self) -> dict[str, str]:
        """Symbol -> position quantity (decimal string)."""
        with self._lock:
            return {s: orders.decimal_text(q) for s, q in self._positions.items()}

    def account(self) -> dict[str, Any]:
        """``GET /v2/account``: cash, equity and buying power follow the fills."""
        with self._lock:
            prices = {s: Decimal(str(self._price_of(s) or 100)) for s in self._positions}
            return account.account(
                self._account_id, self._created, self._cash, dict(self._positions), prices
            )
