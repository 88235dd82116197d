"""Order objects and ``trade_updates`` messages exactly as Alpaca sends them. Pure functions.

Orders are plain dicts with every REST field present: UUID ids, decimal strings for
quantities and prices, RFC 3339 nanosecond timestamps, and enum values alpaca-py accepts.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from simulator.clock import rfc3339

Order = dict[str, Any]

#: Statuses ``GET /v2/orders?status=open`` returns; every other status is closed.
OPEN_STATUSES = frozenset(
    {
        "new",
        "partially_filled",
        "done_for_day",
        "accepted",
        "pending_new",
        "accepted_for_bidding",
        "pending_cancel",
        "pending_replace",
        "stopped",
        "calculated",
        "held",
        "suspended",
    }
)
TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})
SIDES = ("buy", "sell")
TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIMES_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")
_ASSETS = uuid.UUID("4ce9353c-66d1-46c2-898f-fce867ab0247")


def decimal_text(value: Decimal | int | str) -> str:
    """A decimal string without exponent or trailing zeros (``"10"``, ``"187.2315"``)."""
    number = Decimal(value).quantize(Decimal("1e-9")).normalize()
    text = format(number, "f")
    return "0" if text in ("-0", "") else text


def asset_id(symbol: str) -> str:
    """A stable asset UUID for ``symbol``."""
    return str(uuid.uuid5(_ASSETS, symbol))


def new_order(
    *,
    symbol: str,
    ts_ns: int,
    qty: str | None = None,
    notional: str | None = None,
    side: str = "buy",
    order_type: str = "market",
    time_in_force: str = "day",
    limit_price: str | None = None,
    stop_price: str | None = None,
    client_order_id: str | None = None,
    extended_hours: bool = False,
    status: str = "new",
    replaces: str | None = None,
) -> Order:
    """A new simple equity order in ``status`` (one share unless ``qty`` or ``notional``
    is given); raises ValueError for an invalid field."""
    if side not in SIDES or order_type not in TYPES or time_in_force not in TIMES_IN_FORCE:
        raise ValueError(f"invalid side/type/time_in_force: {side}/{order_type}/{time_in_force}")
    if qty is not None and notional is not None:
        raise ValueError("give qty or notional, not both")
    if qty is None and notional is None:
        qty = "1"
    if order_type in ("limit", "stop_limit") and limit_price is None:
        raise ValueError(f"a {order_type} order needs a limit_price")
    if order_type in ("stop", "stop_limit") and stop_price is None:
        raise ValueError(f"a {order_type} order needs a stop_price")
    stamp = rfc3339(ts_ns)
    return {
        "id": str(uuid.uuid4()),
        "client_order_id": client_order_id or str(uuid.uuid4()),
        "created_at": stamp,
        "updated_at": stamp,
        "submitted_at": stamp,
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": replaces,
        "asset_id": asset_id(symbol),
        "symbol": symbol,
        "asset_class": "us_equity",
        "notional": None if notional is None else decimal_text(notional),
        "qty": None if qty is None else decimal_text(qty),
        "filled_qty": "0",
        "filled_avg_price": None,
        "order_class": "",
        "order_type": order_type,
        "type": order_type,
        "side": side,
        "position_intent": "buy_to_open" if side == "buy" else "sell_to_close",
        "time_in_force": time_in_force,
        "limit_price": None if limit_price is None else decimal_text(limit_price),
        "stop_price": None if stop_price is None else decimal_text(stop_price),
        "status": status,
        "extended_hours": extended_hours,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
        "subtag": None,
        "source": None,
        "expires_at": None,
    }


def trade_update(
    event: str,
    order: Order,
    ts_ns: int,
    *,
    execution_id: str | None = None,
    price: str | None = None,
    qty: str | None = None,
    position_qty: str | None = None,
) -> dict[str, Any]:
    """The ``trade_updates`` envelope for ``event`` on ``order`` (copied, so it is a snapshot).

    ``timestamp`` is always present (alpaca-py requires it); executions add ``execution_id``,
    ``price``, ``qty`` and ``position_qty`` as decimal strings.
    """
    data: dict[str, Any] = {"event": event}
    if execution_id is not None:
        data["execution_id"] = execution_id
    data["order"] = dict(order)
    if position_qty is not None:
        data["position_qty"] = position_qty
    if price is not None:
        data["price"] = price
    if qty is not None:
        data["qty"] = qty
    data["timestamp"] = rfc3339(ts_ns)
    return {"stream": "trade_updates", "data": data}
