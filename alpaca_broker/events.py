"""Typed definitions of every normalized event: one ``TypedDict`` per event type.

These are the consumer-side view of ``shared/contract.md``, "Normalized events". The
workers' normalizers build the same events from the tables in :mod:`alpaca_broker.schema`
(and ``tasks.price_events`` / ``tasks.news_events``); ``tests/foundation/test_events.py`` checks
that every definition's fields, in order, equal what those tables produce, so the two cannot
drift. JSON Schemas are generated from these definitions (:mod:`alpaca_broker.jsonschema`).
No I/O here.
"""

import json
from typing import Any, Final, Literal, NotRequired, cast

from typing_extensions import TypedDict

AssetClass = Literal["us_equity", "crypto", "us_option"]
MarketSource = Literal["stream", "backfill"]
Number = float
"""A JSON number as Alpaca sent it (an integer stays an integer)."""


class _Common(TypedDict):
    """The first keys of every event (``schema.COMMON_FIELDS``)."""

    symbol: str
    timestamp: str
    ts_ns: int
    received_at: str


class TradeEvent(_Common):
    type: Literal["trade"]
    price: Number
    size: Number
    exchange: str | None
    trade_id: int | None
    conditions: list[str] | str | None
    """A list for stocks; one string for options; null for crypto."""
    tape: str | None
    taker_side: NotRequired[str | None]
    """Crypto trades only (``B`` or ``S``)."""
    asset_class: AssetClass
    source: MarketSource


class QuoteEvent(_Common):
    type: Literal["quote"]
    bid_price: Number
    bid_size: Number | None
    bid_exchange: str | None
    ask_price: Number
    ask_size: Number | None
    ask_exchange: str | None
    conditions: list[str] | str | None
    tape: str | None
    asset_class: AssetClass
    source: MarketSource


class BarEvent(_Common):
    """A minute bar, an updated minute bar or a daily bar."""

    type: Literal["bar", "updated_bar", "daily_bar"]
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number
    trade_count: Number | None
    vwap: Number | None
    asset_class: AssetClass
    source: MarketSource


class StatusEvent(_Common):
    type: Literal["status"]
    status_code: str
    status_message: str | None
    reason_code: str | None
    reason_message: str | None
    tape: str | None
    asset_class: AssetClass
    source: MarketSource


class LuldEvent(_Common):
    type: Literal["luld"]
    limit_up_price: Number
    limit_down_price: Number
    indicator: str | None
    tape: str | None
    asset_class: AssetClass
    source: MarketSource


class CorrectionEvent(_Common):
    type: Literal["correction"]
    exchange: str | None
    original_id: int | None
    original_price: Number | None
    original_size: Number | None
    original_conditions: list[str] | None
    corrected_id: int | None
    corrected_price: Number
    corrected_size: Number
    corrected_conditions: list[str] | None
    tape: str | None
    asset_class: AssetClass
    source: MarketSource


class CancelErrorEvent(_Common):
    type: Literal["cancel_error"]
    trade_id: int
    exchange: str | None
    price: Number | None
    size: Number | None
    action: str | None
    tape: str | None
    asset_class: AssetClass
    source: MarketSource


class OrderbookEvent(_Common):
    """A crypto order book snapshot (``reset``) or update; published on the channel only."""

    type: Literal["orderbook"]
    bids: list[list[Number]]
    asks: list[list[Number]]
    reset: bool
    asset_class: AssetClass
    source: MarketSource


class NewsEvent(TypedDict):
    type: Literal["news"]
    symbol: None
    timestamp: str
    ts_ns: int
    received_at: str
    id: int | str
    headline: str
    summary: str | None
    author: str | None
    content: str | None
    url: str | None
    symbols: list[str] | None
    created_at: str
    updated_at: str
    provider: str | None


class OrderUpdateEvent(_Common):
    """A trading-stream ``trade_updates`` event; decimals are strings exactly as sent."""

    type: Literal["order_update"]
    event: str
    order_id: str
    client_order_id: str | None
    side: str | None
    order_type: str | None
    order_class: str | None
    time_in_force: str | None
    qty: str | None
    notional: str | None
    filled_qty: str | None
    filled_avg_price: str | None
    limit_price: str | None
    stop_price: str | None
    status: str | None
    execution_id: str | None
    price: str | None
    exec_qty: str | None
    position_qty: str | None
    source: Literal["stream", "reconciliation"]
    order: dict[str, Any]


MarketEvent = (
    TradeEvent
    | QuoteEvent
    | BarEvent
    | StatusEvent
    | LuldEvent
    | CorrectionEvent
    | CancelErrorEvent
    | OrderbookEvent
)
Event = MarketEvent | NewsEvent | OrderUpdateEvent

DEFINITIONS: Final[dict[str, type[Any]]] = {
    "trade": TradeEvent,
    "quote": QuoteEvent,
    "bar": BarEvent,
    "updated_bar": BarEvent,
    "daily_bar": BarEvent,
    "status": StatusEvent,
    "luld": LuldEvent,
    "correction": CorrectionEvent,
    "cancel_error": CancelErrorEvent,
    "orderbook": OrderbookEvent,
    "news": NewsEvent,
    "order_update": OrderUpdateEvent,
}
"""Every event ``type`` -> its definition."""


def field_names(definition: type[Any]) -> tuple[str, ...]:
    """The keys of ``definition`` in event order (``type`` first, as the workers write it)."""
    return ("type", *(name for name in definition.__annotations__ if name != "type"))


def required_names(definition: type[Any]) -> frozenset[str]:
    """The keys every event of ``definition`` carries (the others may be absent)."""
    return cast(frozenset[str], definition.__required_keys__)


class UnknownEvent(ValueError):
    """A JSON object whose ``type`` no definition knows, or not a JSON object at all."""


def parse_event(raw: str | bytes) -> Event:
    """Decode one published event's JSON into its typed form (a plain ``dict``)."""
    value = json.loads(raw)
    if not isinstance(value, dict) or value.get("type") not in DEFINITIONS:
        kind = value.get("type") if isinstance(value, dict) else type(value).__name__
        raise UnknownEvent(f"not a known event: type={kind!r}")
    return cast(Event, value)
