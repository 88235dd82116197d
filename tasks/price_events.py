"""Market-data messages -> contract events, as pure functions of the raw map and receive time."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import excerpt
from alpaca_broker.schema import EVENT_TYPES, FIELD_MAPS, REQUIRED_KEYS
from tasks.encoding import encode_event
from tasks.timestamps import format_ns, format_received, to_ns


class PriceEvent(NamedTuple):
    """A normalized market-data event, encoded once, with what publishing needs to know."""

    symbol: str
    type: str
    ts_ns: int
    received_at_ns: int
    received_at: str
    json: bytes


@dataclass(slots=True)
class PriceBatch:
    """The outcome of one task's items: the valid events in order, and what was skipped."""

    events: list[PriceEvent] = field(default_factory=list)
    malformed: list[MalformedMessage] = field(default_factory=list)


def normalize_price(raw: Any, received_at_ns: Any) -> dict[str, Any]:
    """The contract event for Alpaca market-data map ``raw`` received at ``received_at_ns``.

    Every contract field is present (``None`` when Alpaca did not send it) and numbers are
    kept as sent. ``raw["t"]`` may be ns since the epoch (int), RFC 3339 or a msgpack
    Timestamp. Raises MalformedMessage on an unknown ``T``, a missing required
    key, a bad symbol or a bad timestamp.
    """
    if not isinstance(raw, dict):
        raise MalformedMessage("not a map", f"got {type(raw).__name__}", raw)
    code = raw.get("T")
    if type(code) is not str or code not in FIELD_MAPS:
        raise MalformedMessage("unknown T", f"T={excerpt(code, 40)}", raw)
    missing = [key for key in REQUIRED_KEYS[code] if raw.get(key) is None]
    if missing:
        raise MalformedMessage("missing keys", f"T={code} lacks {sorted(missing)}", raw)
    symbol = raw["S"]
    if type(symbol) is not str or not symbol:
        raise MalformedMessage("bad symbol", f"S={excerpt(symbol, 40)}", raw)
    try:
        ts_ns = to_ns(raw["t"])
        timestamp = format_ns(ts_ns)
    except ValueError as exc:
        raise MalformedMessage("bad timestamp", str(exc), raw) from None
    try:
        received_at = format_received(received_at_ns)
    except ValueError as exc:
        raise MalformedMessage("bad received_at", str(exc), raw) from None
    event: dict[str, Any] = {
        "type": EVENT_TYPES[code],
        "symbol": symbol,
        "timestamp": timestamp,
        "ts_ns": ts_ns,
        "received_at": received_at,
    }
    for name, key in FIELD_MAPS[code]:
        event[name] = raw.get(key)
    return event


def prepare_price(raw: Any, received_at_ns: Any, source: str = "stream") -> PriceEvent:
    """Normalize and encode one market-data message; raises MalformedMessage."""
    event = normalize_price(raw, received_at_ns)
    event["source"] = source  # issue 13: "stream" or "backfill" (the item's third element)
    return PriceEvent(
        symbol=event["symbol"],
        type=event["type"],
        ts_ns=event["ts_ns"],
        received_at_ns=received_at_ns,
        received_at=event["received_at"],
        json=encode_event(event),
    )


ITEM_SOURCES = ("stream", "backfill")


def _item_source(item: Any) -> str:
    """The source of a ``[received_at_ns, raw]`` or ``[received_at_ns, raw, source]`` item."""
    if not isinstance(item, list | tuple) or len(item) not in (2, 3):
        raise MalformedMessage("bad item", "not a [received_at_ns, raw(, source)] item", item)
    source = item[2] if len(item) == 3 else "stream"
    if source not in ITEM_SOURCES:
        raise MalformedMessage("bad item", f"unknown source {excerpt(source, 40)}", item)
    return str(source)


def prepare_batch(items: Any) -> PriceBatch:
    """Every item ``[received_at_ns, raw(, source)]`` of a price task; bad items are set aside."""
    batch = PriceBatch()
    if not isinstance(items, list):
        batch.malformed.append(
            MalformedMessage("bad batch", f"not a list: {type(items).__name__}", items)
        )
        return batch
    for item in items:
        try:
            source = _item_source(item)
            batch.events.append(prepare_price(item[1], item[0], source))
        except MalformedMessage as exc:
            batch.malformed.append(exc)
    return batch


def newest_per_type(events: Iterable[PriceEvent]) -> list[PriceEvent]:
    """The newest event per (symbol, type): greatest ``ts_ns``, then latest receipt.

    On a complete tie the later event of the batch wins (batches are in socket order).
    The Lua script applies the same order against what Redis already holds.
    """
    newest: dict[tuple[str, str], PriceEvent] = {}
    for event in events:
        key = (event.symbol, event.type)
        held = newest.get(key)
        if held is None or (event.ts_ns, event.received_at_ns) >= (
            held.ts_ns,
            held.received_at_ns,
        ):
            newest[key] = event
    return list(newest.values())
