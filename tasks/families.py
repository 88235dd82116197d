"""One table per market-data family (``asset_class``): which messages it has and their fields.

Stocks, crypto and options share the stock field names for the keys Alpaca sends alike
(``shared/contract.md``, "Normalized events"); a family entry lists, per Alpaca ``T``, the
event type, the raw keys required, the (field, raw key) pairs copied as sent, and an optional
pure builder of fields that need converting (the crypto order book's levels). No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.schema import (
    CRYPTO_REQUIRED_KEYS,
    EVENT_TYPES,
    FIELD_MAPS,
    OPTION_REQUIRED_KEYS,
    REQUIRED_KEYS,
)

MARKET_SOURCES: Final = frozenset({"stream", "backfill"})
"""``source`` of a market-data event: read off the socket, or fetched after a gap."""

DEFAULT_SOURCE: Final = "stream"

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
