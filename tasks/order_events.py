"""Trading-stream ``trade_updates`` data -> ``order_update`` events, as pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import excerpt
from alpaca_broker.schema import (
    ORDER_FIELDS_FROM_EVENT,
    ORDER_FIELDS_FROM_ORDER,
    ORDER_HASH_FROM_EVENT,
    ORDER_SOURCES,
    ORDER_UPDATE_TYPE,
)
from alpaca_broker.timestamps import event_times
from tasks.encoding import encode_event, hash_value


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """A normalized order event, encoded once, with its dedupe id and order-hash fields."""

    order_id: str
    dedupe_id: str
    state_id: str
    source: str
    ts_ns: int
    hash_fields: tuple[tuple[str, str], ...]
    json: bytes


MAX_ID_CHARS: Final = 128
"""Longest order id or execution id accepted (Alpaca's are 36-character UUIDs); the dedupe
and state markers are built from them."""
MAX_DECIMAL_CHARS: Final = 48
"""Longest decimal string accepted (a quantity or price); Alpaca sends at most ~20."""
MAX_DECIMAL_EXPONENT: Final = 30
"""Largest magnitude of a decimal's adjusted exponent (1e30 shares, 1e-30 dollars): keeps
every decimal, normalized for the state marker, a short string and clear of Decimal's
Overflow/Underflow traps."""
_DECIMAL: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,4})?\Z")
MAX_ORDER_EVENT_BYTES: Final = 64 * 1024
"""Largest order event accepted, as the JSON it is published as (the whole ``order`` object
included). Alpaca's order updates are about 2-3 KB, a multi-leg order's some 10 KB: an event
beyond this is no order update Alpaca sends, but a hand-built task (anyone who can write the
broker can queue one): malformed, dead-lettered, never published."""

ORDER_STRINGS: Final = (
    "client_order_id", "side", "order_type", "type", "order_class", "time_in_force", "status",
)  # fmt: skip
"""Keys of the ``order`` object that must be a string or null."""
ORDER_DECIMALS: Final = (
    "qty", "notional", "filled_qty", "filled_avg_price", "limit_price", "stop_price",
)  # fmt: skip
"""Keys of the ``order`` object that must be a bounded decimal (string) or null."""
EVENT_DECIMALS: Final = ("price", "qty", "position_qty")
"""Keys of the ``trade_updates`` ``data`` object that must be a bounded decimal or null."""


def _non_empty_str(value: Any) -> bool:
    return type(value) is str and value != ""


def _is_id(value: Any) -> bool:
    return _non_empty_str(value) and len(value) <= MAX_ID_CHARS


def is_bounded_decimal(value: Any) -> bool:
    """True for null, ``""``, or a decimal string (or JSON number) of bounded size.

    Bounded: at most MAX_DECIMAL_CHARS characters and an adjusted exponent within
    +-MAX_DECIMAL_EXPONENT, so normalizing it can neither overflow nor build a huge string.
    """
    if value is None or value == "":
        return True
    if type(value) is int or type(value) is float:
        text = repr(value)
    elif type(value) is str:
        text = value
    else:
        return False
    # The cheap checks (length, then a regex) run before Decimal ever sees the text.
    if len(text) > MAX_DECIMAL_CHARS or not _DECIMAL.match(text):
        return False
    number = Decimal(text)
    return number.is_zero() or abs(number.adjusted()) <= MAX_DECIMAL_EXPONENT


def _check_fields(data: dict[str, Any], order: dict[str, Any]) -> None:
    """Raise MalformedMessage unless every field has the type the contract gives it."""
    symbol = order.get("symbol")
    if not _non_empty_str(symbol):
        raise MalformedMessage("order: bad symbol", f"symbol={excerpt(symbol, 40)}", data)
    for key in ORDER_STRINGS:
        value = order.get(key)
        if value is not None and type(value) is not str:
            raise MalformedMessage("order: bad field", f"{key}={excerpt(value, 40)}", data)
    execution_id = data.get("execution_id")
    if execution_id is not None and execution_id != "" and not _is_id(execution_id):
        raise MalformedMessage("order: bad execution id", excerpt(execution_id, 40), data)
    for source, keys in ((order, ORDER_DECIMALS), (data, EVENT_DECIMALS)):
        for key in keys:
            if not is_bounded_decimal(source.get(key)):
                detail = f"{key}={excerpt(source.get(key), 40)}"
                raise MalformedMessage("order: bad decimal", detail, data)


def normalize_order(data: Any, received_at_ns: Any, source: Any) -> dict[str, Any]:
    """The ``order_update`` event for a ``trade_updates`` ``data`` object.

    Decimal strings are copied as sent; ``order`` is the full order object; ``exec_qty`` is the
    event's own ``qty``; ``timestamp`` is the event's (else the order's ``updated_at``).
    Raises MalformedMessage when ``data`` has no ``event`` name, no ``order`` object with an
    ``id``, no valid timestamp, ``source`` is not ``stream``/``reconciliation``, or a field
    has the wrong type: ``symbol`` a non-empty string, the other text fields strings or null,
    quantities and prices bounded decimals (:func:`is_bounded_decimal`) or null.
    """
    if not isinstance(data, dict):
        raise MalformedMessage("order: not a map", f"got {type(data).__name__}", data)
    if type(source) is not str or source not in ORDER_SOURCES:
        raise MalformedMessage("order: bad source", f"source={excerpt(source, 40)}", data)
    name = data.get("event")
    if not _non_empty_str(name):
        raise MalformedMessage("order: bad event", f"event={excerpt(name, 40)}", data)
    order = data.get("order")
    if not isinstance(order, dict):
        raise MalformedMessage("order: no order object", f"order={excerpt(order, 40)}", data)
    if not _is_id(order.get("id")):
        raise MalformedMessage("order: no order id", f"id={excerpt(order.get('id'), 40)}", data)
    raw_ts = data.get("timestamp")
    if raw_ts is None:
        # Older messages omit `timestamp` on some events (e.g. `new`); the order's
        # `updated_at` is when that state began.
        raw_ts = order.get("updated_at")
    ts_ns, timestamp, received_at = event_times(raw_ts, received_at_ns, data, "order: ")
    _check_fields(data, order)
    event: dict[str, Any] = {
        "type": ORDER_UPDATE_TYPE,
        "symbol": order.get("symbol"),
        "timestamp": timestamp,
        "ts_ns": ts_ns,
        "received_at": received_at,
        "event": name,
    }
    for field, key in ORDER_FIELDS_FROM_ORDER:
        event[field] = order.get(key)
    if event["order_type"] is None:
        event["order_type"] = order.get("type")
    for field, key in ORDER_FIELDS_FROM_EVENT:
        event[field] = data.get(key)
    event["source"] = source
    event["order"] = order
    return event


def dedupe_id_of(event: dict[str, Any]) -> str:
    """What makes an order event distinct: its ``execution_id``, else order, event and time."""
    execution_id = event["execution_id"]
    if execution_id is not None and execution_id != "":
        return str(execution_id)
    return f"{event['order_id']}|{event['event']}|{event['timestamp']}"


def _quantity(value: Any) -> str:
    """A quantity in one spelling ("10", "10.0" and "1E+1" are the same state).

    ``value`` passed :func:`is_bounded_decimal`: the result has at most ~80 characters.
    """
    if value == "":
        return ""
    return format(Decimal(str(value)).normalize(), "f")


def state_id_of(event: dict[str, Any]) -> str:
    """The order state an event leads to: order, event, status and filled quantity.

    Reconciliation recovers states, not executions (REST has no ``execution_id``): a
    ``reconciliation`` event for a state that a streamed event already published (or the
    reverse) is the same event seen twice.
    """
    filled = _quantity(event["filled_qty"]) if event["filled_qty"] is not None else ""
    return f"{event['order_id']}|{event['event']}|{event['status']}|{filled}"


def prepare_order(data: Any, received_at_ns: Any, source: Any) -> OrderEvent:
    """Normalize and encode one order event; raises MalformedMessage (also for an event of
    more than MAX_ORDER_EVENT_BYTES)."""
    event = normalize_order(data, received_at_ns, source)
    encoded = encode_event(event)
    if len(encoded) > MAX_ORDER_EVENT_BYTES:
        detail = f"{len(encoded)} bytes of JSON, more than {MAX_ORDER_EVENT_BYTES}"
        summary = {"order_id": event["order_id"], "event": event["event"]}
        raise MalformedMessage("order: too large", detail, summary)
    fields = tuple((field, hash_value(event[key])) for field, key in ORDER_HASH_FROM_EVENT)
    return OrderEvent(
        order_id=event["order_id"],
        dedupe_id=dedupe_id_of(event),
        state_id=state_id_of(event),
        source=event["source"],
        ts_ns=event["ts_ns"],
        hash_fields=fields,
        json=encoded,
    )
