"""Market-data messages -> contract events, as pure functions of the raw map and receive time.

One table per market-data family (``asset_class``) says which messages it has and their
fields: stocks, crypto and options share the stock field names for the keys Alpaca sends alike
(``shared/contract.md``, "Normalized events"); a family entry lists, per Alpaca ``T``, the
event type, the raw keys required, the (field, raw key) pairs copied as sent, and an optional
pure builder of fields that need converting (the crypto order book's levels). No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import excerpt
from alpaca_broker.schema import (
    CRYPTO_REQUIRED_KEYS,
    EVENT_TYPES,
    FIELD_MAPS,
    OPTION_REQUIRED_KEYS,
    REQUIRED_KEYS,
)
from alpaca_broker.timestamps import event_times
from tasks.encoding import encode_event

MARKET_SOURCES: Final = frozenset({"stream", "backfill"})
"""``source`` of a market-data event: read off the socket, or fetched after a gap."""

DEFAULT_SOURCE: Final = "stream"
MAX_SYMBOL_CHARS: Final = 64
"""Longest symbol accepted (an OCC option symbol has 21 characters): it names Redis keys."""
MAX_PRICE_EVENT_BYTES: Final = 256 * 1024
"""Largest market-data event accepted, as the JSON it is published as (a crypto order-book
snapshot is the largest Alpaca sends, some KB): beyond it the message is malformed."""

TAIL_FIELDS: Final[tuple[str, ...]] = ("asset_class", "source")
"""The last keys of every market-data event, after its type's own fields."""

FieldMap = tuple[tuple[str, str], ...]
Builder = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class MessageKind:
    """One Alpaca ``T`` of a family: its event type, required keys and fields in order."""

    type: str
    required: frozenset[str]
    fields: FieldMap
    build: Builder | None = None
    """Fields computed from the raw map (after ``fields``); raises MalformedMessage."""
    latest: bool = True
    """False for events published on the channel only (never held in ``P:latest``)."""
    names: tuple[str, ...] = field(init=False)
    """The event's names of ``fields``, and below their raw keys: zipped per message."""
    keys: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(name for name, _ in self.fields))
        object.__setattr__(self, "keys", tuple(key for _, key in self.fields))


@dataclass(frozen=True, slots=True)
class Family:
    """The market-data messages of one ``asset_class``, by Alpaca ``T``."""

    asset_class: str
    kinds: Mapping[str, MessageKind] = field(default_factory=dict)


def _levels(raw: dict[str, Any], key: str) -> list[list[Any]]:
    """An order book side ``[{"p": price, "s": size}, ...]`` as ``[[price, size], ...]``."""
    side = raw[key]
    if not isinstance(side, list):
        raise MalformedMessage("bad order book", f"{key} is not a list", raw)
    levels: list[list[Any]] = []
    for level in side:
        if not isinstance(level, dict):
            raise MalformedMessage("bad order book", f"a level of {key} is not a map", raw)
        price, size = level.get("p"), level.get("s")
        for value in (price, size):
            if type(value) not in (int, float):
                raise MalformedMessage("bad order book", f"a level of {key} lacks p or s", raw)
        levels.append([price, size])
    return levels


def orderbook_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """``bids``, ``asks`` (in Alpaca's order) and ``reset``, false when ``r`` is absent."""
    reset = raw.get("r", False)
    if type(reset) is not bool:
        raise MalformedMessage("bad order book", f"r is not a boolean: {reset!r}", raw)
    return {"bids": _levels(raw, "b"), "asks": _levels(raw, "a"), "reset": reset}


def _family(
    asset_class: str, required: Mapping[str, frozenset[str]], **extra: MessageKind
) -> Family:
    kinds = {
        code: MessageKind(EVENT_TYPES[code], keys, FIELD_MAPS[code])
        for code, keys in required.items()
        if code not in extra
    }
    kinds.update(extra)
    return Family(asset_class, MappingProxyType(kinds))


FAMILIES: Final[Mapping[str, Family]] = MappingProxyType(
    {
        "us_equity": _family("us_equity", REQUIRED_KEYS),
        "crypto": _family(
            "crypto",
            CRYPTO_REQUIRED_KEYS,
            t=MessageKind(
                "trade", CRYPTO_REQUIRED_KEYS["t"], (*FIELD_MAPS["t"], ("taker_side", "tks"))
            ),
            o=MessageKind("orderbook", CRYPTO_REQUIRED_KEYS["o"], (), orderbook_fields, False),
        ),
        # An option's ``c`` is one string: copied as sent, like every other field.
        "us_option": _family("us_option", OPTION_REQUIRED_KEYS),
    }
)
"""Every market-data family by ``asset_class`` (the ``family`` of a price task)."""

DEFAULT_FAMILY: Final = "us_equity"


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
    return _normalize(_table(family, source, raw), raw, received_at_ns, source)[1]


def _table(family: Any, source: Any, raw: Any) -> Family:
    """The family's table, once the family and source are known good."""
    table = FAMILIES.get(family) if isinstance(family, str) else None
    if table is None:
        raise MalformedMessage("unknown family", f"family={excerpt(family, 40)}", raw)
    if not isinstance(source, str) or source not in MARKET_SOURCES:
        raise MalformedMessage("unknown source", f"source={excerpt(source, 40)}", raw)
    return table


def _normalize(
    table: Family, raw: Any, received_at_ns: Any, source: str
) -> tuple[MessageKind, dict[str, Any]]:
    """:func:`normalize_price` with its family and source checked: the per-message path."""
    if not isinstance(raw, dict):
        raise MalformedMessage("not a map", f"got {type(raw).__name__}", raw)
    code = raw.get("T")
    kind = table.kinds.get(code) if type(code) is str else None
    if kind is None:
        raise MalformedMessage("unknown T", f"T={excerpt(code, 40)} ({table.asset_class})", raw)
    # ``None in map(...)`` runs the lookups in C; the names are only listed for the error.
    if None in map(raw.get, kind.required):
        missing = sorted(key for key in kind.required if raw.get(key) is None)
        raise MalformedMessage("missing keys", f"T={code} lacks {missing}", raw)
    symbol = raw["S"]
    if type(symbol) is not str or not symbol or len(symbol) > MAX_SYMBOL_CHARS:
        raise MalformedMessage("bad symbol", f"S={excerpt(symbol, 40)}", raw)
    ts_ns, timestamp, received_at = event_times(raw["t"], received_at_ns, raw)
    built = kind.build(raw) if kind.build is not None else None
    values = map(raw.get, kind.keys)  # the copied fields, looked up in C
    event = shape_event(kind, symbol, ts_ns, timestamp, received_at, values, built)
    event["asset_class"] = table.asset_class
    event["source"] = source
    return kind, event


def shape_event(
    kind: MessageKind,
    symbol: str,
    ts_ns: int,
    timestamp: str,
    received_at: str,
    values: Iterable[Any],
    built: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event's fields in contract order, up to its tail (``asset_class``, ``source``, set
    by the caller): the one shape both the message and the frame paths build."""
    event: dict[str, Any] = {
        "type": kind.type,
        "symbol": symbol,
        "timestamp": timestamp,
        "ts_ns": ts_ns,
        "received_at": received_at,
    }
    event.update(zip(kind.names, values, strict=True))
    if built is not None:
        event.update(built)
    return event


def encoded(kind: MessageKind, event: dict[str, Any], received_at_ns: int) -> PriceEvent:
    """``event`` encoded, with what publishing needs; raises MalformedMessage (NaN, or more
    than MAX_PRICE_EVENT_BYTES)."""
    data = encode_event(event)
    if len(data) > MAX_PRICE_EVENT_BYTES:
        detail = f"{len(data)} bytes of JSON, more than {MAX_PRICE_EVENT_BYTES}"
        raise MalformedMessage("too large", detail, {"symbol": event["symbol"][:40]})
    return PriceEvent(  # positional: a keyword NamedTuple call costs more, once per event
        event["symbol"],
        kind.type,
        event["ts_ns"],
        received_at_ns,
        event["received_at"],
        data,
        kind.latest,
    )


def prepare_price(
    raw: Any, received_at_ns: Any, family: str = DEFAULT_FAMILY, source: str = DEFAULT_SOURCE
) -> PriceEvent:
    """Normalize and encode one market-data message; raises MalformedMessage."""
    return prepare_in(_table(family, source, raw), raw, received_at_ns, source)


def prepare_in(table: Family, raw: Any, received_at_ns: Any, source: str) -> PriceEvent:
    """:func:`prepare_price` with its family's table in hand (checked once per frame)."""
    kind, event = _normalize(table, raw, received_at_ns, source)
    return encoded(kind, event, received_at_ns)


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
