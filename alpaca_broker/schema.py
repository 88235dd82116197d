"""The normalized event schema as pure data, shared by the producer and the worker.

The producer may pre-validate a raw market-data message cheaply with :data:`REQUIRED_KEYS`
without importing any task code; the worker's normalizers (``tasks.price_events`` and
``tasks.order_events``) build events from the same tables. Names follow
``shared/contract.md``, "Normalized events". No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

COMMON_FIELDS: Final[tuple[str, ...]] = ("type", "symbol", "timestamp", "ts_ns", "received_at")
"""The first keys of every event, in this order."""

RAW_TYPE_KEY: Final = "T"
RAW_SYMBOL_KEY: Final = "S"
RAW_TIME_KEY: Final = "t"

_BAR: Final[tuple[tuple[str, str], ...]] = (
    ("open", "o"),
    ("high", "h"),
    ("low", "l"),
    ("close", "c"),
    ("volume", "v"),
    ("trade_count", "n"),
    ("vwap", "vw"),
)

EVENT_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "t": "trade",
        "q": "quote",
        "b": "bar",
        "u": "updated_bar",
        "d": "daily_bar",
        "s": "status",
        "l": "luld",
        "c": "correction",
        "x": "cancel_error",
    }
)
"""Alpaca's market-data ``T`` -> the contract's event ``type``."""

FIELD_MAPS: Final[Mapping[str, tuple[tuple[str, str], ...]]] = MappingProxyType(
    {
        "t": (
            ("price", "p"),
            ("size", "s"),
            ("exchange", "x"),
            ("trade_id", "i"),
            ("conditions", "c"),
            ("tape", "z"),
        ),
        "q": (
            ("bid_price", "bp"),
            ("bid_size", "bs"),
            ("bid_exchange", "bx"),
            ("ask_price", "ap"),
            ("ask_size", "as"),
            ("ask_exchange", "ax"),
            ("conditions", "c"),
            ("tape", "z"),
        ),
        "b": _BAR,
        "u": _BAR,
        "d": _BAR,
        "s": (
            ("status_code", "sc"),
            ("status_message", "sm"),
            ("reason_code", "rc"),
            ("reason_message", "rm"),
            ("tape", "z"),
        ),
        "l": (
            ("limit_up_price", "u"),
            ("limit_down_price", "d"),
            ("indicator", "i"),
            ("tape", "z"),
        ),
        "c": (
            ("exchange", "x"),
            ("original_id", "oi"),
            ("original_price", "op"),
            ("original_size", "os"),
            ("original_conditions", "oc"),
            ("corrected_id", "ci"),
            ("corrected_price", "cp"),
            ("corrected_size", "cs"),
            ("corrected_conditions", "cc"),
            ("tape", "z"),
        ),
        "x": (
            ("trade_id", "i"),
            ("exchange", "x"),
            ("price", "p"),
            ("size", "s"),
            ("action", "a"),
            ("tape", "z"),
        ),
    }
)
"""Per ``T``: (contract field, raw key) pairs after :data:`COMMON_FIELDS`, in event order."""

_ALWAYS: Final = frozenset({RAW_TYPE_KEY, RAW_SYMBOL_KEY, RAW_TIME_KEY})

REQUIRED_KEYS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "t": _ALWAYS | {"p", "s"},
        "q": _ALWAYS | {"bp", "ap"},
        "b": _ALWAYS | {"o", "h", "l", "c", "v"},
        "u": _ALWAYS | {"o", "h", "l", "c", "v"},
        "d": _ALWAYS | {"o", "h", "l", "c", "v"},
        "s": _ALWAYS | {"sc"},
        "l": _ALWAYS | {"u", "d"},
        "c": _ALWAYS | {"cp", "cs"},
        "x": _ALWAYS | {"i"},
    }
)
"""Per ``T``: the raw keys a message must carry to be well-formed (others become ``null``)."""

CRYPTO_REQUIRED_KEYS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "t": REQUIRED_KEYS["t"],
        "q": REQUIRED_KEYS["q"],
        "b": REQUIRED_KEYS["b"],
        "u": REQUIRED_KEYS["u"],
        "d": REQUIRED_KEYS["d"],
        "o": _ALWAYS | {"b", "a"},
    }
)
"""The crypto stream's market messages (``o``: an order book snapshot or update)."""

OPTION_REQUIRED_KEYS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"t": REQUIRED_KEYS["t"], "q": REQUIRED_KEYS["q"]}
)
"""The option stream's market messages: trades and quotes only."""

NEWS_REQUIRED_KEYS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"n": frozenset({RAW_TYPE_KEY, "id", "headline", "created_at", "updated_at"})}
)
"""The news stream's articles (no ``S``: an article names many symbols)."""

ASSET_CLASSES: Final = ("us_equity", "crypto", "us_option")
"""The ``asset_class`` of market-data events, and the normalizer family of each stream."""

ORDER_UPDATE_TYPE: Final = "order_update"

ORDER_UPDATE_FIELDS: Final[tuple[str, ...]] = (
    "event",
    "order_id",
    "client_order_id",
    "symbol",
    "side",
    "order_type",
    "order_class",
    "time_in_force",
    "qty",
    "notional",
    "filled_qty",
    "filled_avg_price",
    "limit_price",
    "stop_price",
    "status",
    "execution_id",
    "price",
    "exec_qty",
    "position_qty",
    "source",
    "order",
)
"""The contract's ``order_update`` fields (``symbol`` sits among :data:`COMMON_FIELDS`)."""

ORDER_FIELDS_FROM_ORDER: Final[tuple[tuple[str, str], ...]] = (
    ("order_id", "id"),
    ("client_order_id", "client_order_id"),
    ("side", "side"),
    ("order_type", "order_type"),
    ("order_class", "order_class"),
    ("time_in_force", "time_in_force"),
    ("qty", "qty"),
    ("notional", "notional"),
    ("filled_qty", "filled_qty"),
    ("filled_avg_price", "filled_avg_price"),
    ("limit_price", "limit_price"),
    ("stop_price", "stop_price"),
    ("status", "status"),
)
"""(event field, key of the ``order`` object) pairs."""

ORDER_FIELDS_FROM_EVENT: Final[tuple[tuple[str, str], ...]] = (
    ("execution_id", "execution_id"),
    ("price", "price"),
    ("exec_qty", "qty"),
    ("position_qty", "position_qty"),
)
"""(event field, key of the ``trade_updates`` ``data`` object) pairs."""

ORDER_SOURCES: Final = frozenset({"stream", "reconciliation"})

ORDER_HASH_FROM_EVENT: Final[tuple[tuple[str, str], ...]] = (
    ("status", "status"),
    ("event", "event"),
    ("symbol", "symbol"),
    ("side", "side"),
    ("qty", "qty"),
    ("filled_qty", "filled_qty"),
    ("filled_avg_price", "filled_avg_price"),
    ("updated_at", "timestamp"),
    ("ts_ns", "ts_ns"),
)
"""(field of ``P:order:{ORDER_ID}``, event field it holds) pairs, in the order written; the
one list of the order hash's fields (``tasks.order_events`` writes exactly these)."""

ORDER_HASH_FIELDS: Final[tuple[str, ...]] = (*(f for f, _ in ORDER_HASH_FROM_EVENT), "json")
"""Fields of ``P:order:{ORDER_ID}``; ``updated_at`` is the event's ``timestamp``, ``json``
the event itself; ``ts_ns`` (beyond the contract's list) is the held event's time, which
the order script compares, never parsing it out of ``json``."""

FINAL_STATUSES: Final = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
"""Order statuses after which an order changes no more (the contract's list): its hash expires
after ``ORDER_RETENTION`` and it leaves the open-order index. Every other status is open,
``done_for_day`` among them (the order may still fill on a later day): its hash never expires
and reconciliation keeps watching it."""
