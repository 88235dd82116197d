"""Market-data messages -> contract events, as pure functions of the raw map and receive time."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import excerpt
from alpaca_broker.timestamps import event_times
from tasks.encoding import encode_event
from tasks.families import DEFAULT_FAMILY, DEFAULT_SOURCE, FAMILIES, MARKET_SOURCES


class PriceEvent(NamedTuple):
    """A normalized market-data event, encoded once, with what publishing needs to know."""

    symbol: str
    type: str
    ts_ns: int
    received_at_ns: int
    received_at: str
    json: bytes
    latest: bool = True
    """False for events published on the channel only (order books)."""


@dataclass(slots=True)
class PriceBatch:
    """The outcome of one task's items: the valid events in order, and what was skipped."""

    events: list[PriceEvent] = field(default_factory=list)
    malformed: list[MalformedMessage] = field(default_factory=list)


def normalize_price(
    raw: Any,
    received_at_ns: Any,
    family: str = DEFAULT_FAMILY,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """The contract event for Alpaca market-data map ``raw`` received at ``received_at_ns``.

    ``family`` is the stream's asset class (``us_equity``, ``crypto``, ``us_option``) and
    ``source`` is ``stream`` or ``backfill``. Every contract field is present (``None`` when
    Alpaca did not send it) and numbers are kept as sent. ``raw["t"]`` may be ns since the
    epoch (int), RFC 3339 or a msgpack Timestamp. Raises MalformedMessage on an unknown
    family, source or ``T``, a missing required key, a bad symbol or a bad timestamp.
    """
    table = FAMILIES.get(family) if isinstance(family, str) else None
    if table is None:
        raise MalformedMessage("unknown family", f"family={excerpt(family, 40)}", raw)
    if not isinstance(source, str) or source not in MARKET_SOURCES:
        raise MalformedMessage("unknown source", f"source={excerpt(source, 40)}", raw)
    if not isinstance(raw, dict):
        raise MalformedMessage("not a map", f"got {type(raw).__name__}", raw)
    code = raw.get("T")
    kind = table.kinds.get(code) if type(code) is str else None
    if kind is None:
        raise MalformedMessage("unknown T", f"T={excerpt(code, 40)} ({family})", raw)
    missing = [key for key in kind.required if raw.get(key) is None]
    if missing:
        raise MalformedMessage("missing keys", f"T={code} lacks {sorted(missing)}", raw)
    symbol = raw["S"]
    if type(symbol) is not str or not symbol:
        raise MalformedMessage("bad symbol", f"S={excerpt(symbol, 40)}", raw)
    ts_ns, timestamp, received_at = event_times(raw["t"], received_at_ns, raw)
    event: dict[str, Any] = {
        "type": kind.type,
        "symbol": symbol,
        "timestamp": timestamp,
        "ts_ns": ts_ns,
        "received_at": received_at,
    }
    for name, key in kind.fields:
        event[name] = raw.get(key)
    if kind.build is not None:
        event.update(kind.build(raw))
    event["asset_class"] = table.asset_class
    event["source"] = source
    return event


def prepare_price(
    raw: Any, received_at_ns: Any, family: str = DEFAULT_FAMILY, source: str = DEFAULT_SOURCE
) -> PriceEvent:
    """Normalize and encode one market-data message; raises MalformedMessage."""
    event = normalize_price(raw, received_at_ns, family, source)
    return PriceEvent(
        symbol=event["symbol"],
        type=event["type"],
        ts_ns=event["ts_ns"],
        received_at_ns=received_at_ns,
        received_at=event["received_at"],
        json=encode_event(event),
        latest=FAMILIES[family].kinds[raw["T"]].latest,
    )


def prepare_batch(items: Any, family: str = DEFAULT_FAMILY) -> PriceBatch:
    """Every item of a price task of ``family``; bad items are set aside, not raised.

    An item is ``[received_at_ns, raw]``, or ``[received_at_ns, raw, source]`` for events
    not read off the socket (``backfill``: the hook for the bar backfill). A ``raw`` that is a
    string is a whole data-stream frame (base64 of its msgpack bytes, as the producer read
    it): its messages are decoded here, in the workers, each with the frame's receive time.
    """
    batch = PriceBatch()
    if not isinstance(items, list):
        batch.malformed.append(
            MalformedMessage("bad batch", f"not a list: {type(items).__name__}", items)
        )
        return batch
    for item in items:
        try:
            if not isinstance(item, list | tuple) or len(item) not in (2, 3):
                raise MalformedMessage("bad item", "not [received_at_ns, raw(, source)]", item)
            source = item[2] if len(item) == 3 else DEFAULT_SOURCE
            if isinstance(item[1], str):
                _prepare_frame(batch, item[1], item[0], family)
            else:
                batch.events.append(prepare_price(item[1], item[0], family, source))
        except MalformedMessage as exc:
            batch.malformed.append(exc)
    return batch


def _prepare_frame(batch: PriceBatch, data: str, received_at_ns: Any, family: str) -> None:
    """Every message of one frame (base64 msgpack) into ``batch``; raises MalformedMessage
    when the frame itself cannot be decoded."""
    try:
        messages = msgpack.unpackb(base64.b64decode(data, validate=True))
    except Exception:  # binascii.Error and msgpack's several unrelated types for garbage
        raise MalformedMessage("undecodable frame", "not base64 msgpack", data) from None
    if not isinstance(messages, list):
        raise MalformedMessage("bad frame", "not an array", messages)
    for raw in messages:
        try:
            batch.events.append(prepare_price(raw, received_at_ns, family))
        except MalformedMessage as exc:
            batch.malformed.append(exc)


def newest_per_type(events: Iterable[PriceEvent]) -> list[PriceEvent]:
    """The newest event per (symbol, type): greatest ``ts_ns``, then latest receipt.

    Only events held in the latest hashes count (``latest``): order books are left out.

    On a complete tie the later event of the batch wins (batches are in socket order).
    The Lua script applies the same order against what Redis already holds.
    """
    newest: dict[tuple[str, str], PriceEvent] = {}
    for event in events:
        if not event.latest:
            continue
        key = (event.symbol, event.type)
        held = newest.get(key)
        if held is None or (event.ts_ns, event.received_at_ns) >= (
            held.ts_ns,
            held.received_at_ns,
        ):
            newest[key] = event
    return list(newest.values())
