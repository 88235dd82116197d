"""The typed event definitions equal what the normalizers build from the schema tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alpaca_broker.events import (
    DEFINITIONS,
    NewsEvent,
    OrderUpdateEvent,
    UnknownEvent,
    field_names,
    parse_event,
    required_names,
)
from alpaca_broker.schema import COMMON_FIELDS, ORDER_UPDATE_FIELDS, ORDER_UPDATE_TYPE
from tasks.news_events import NEWS_FIELDS, NEWS_TYPE, normalize_news
from tasks.order_events import normalize_order
from tasks.price_events import FAMILIES, TAIL_FIELDS, normalize_price
from tests.tasks.payloads import (
    RECEIVED_NS,
    json_messages,
    stream_expected,
    stream_messages,
    trade_updates,
)


def _keys_match(event: dict[str, Any]) -> None:
    """``event``'s keys, in order, are its definition's fields (optional ones may be absent)."""
    definition = DEFINITIONS[event["type"]]
    expected = [
        name
        for name in field_names(definition)
        if name in required_names(definition) or name in event
    ]
    assert list(event) == expected, event["type"]


def _market_events() -> list[dict[str, Any]]:
    events = [normalize_price(msg, RECEIVED_NS) for msg in json_messages()]
    for family, capture in (("crypto", "crypto"), ("us_option", "options")):
        events += [normalize_price(msg, RECEIVED_NS, family) for msg in stream_messages(capture)]
    return events


def test_every_captured_market_event_has_exactly_its_definitions_fields():
    events = _market_events()
    assert {e["type"] for e in events} == set(DEFINITIONS) - {"news", "order_update"}
    for event in events:
        _keys_match(event)


def test_every_captured_news_and_order_event_has_exactly_its_definitions_fields():
    news = [normalize_news(msg, RECEIVED_NS) for msg in stream_messages("news") if msg["T"] == "n"]
    orders = [normalize_order(data, RECEIVED_NS, "stream") for data in trade_updates()]
    assert news
    assert orders
    for event in [*news, *orders]:
        _keys_match(event)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_definitions_equal_the_schema_tables_of_every_family(family):
    for kind in FAMILIES[family].kinds.values():
        built = [*COMMON_FIELDS, *(name for name, _ in kind.fields)]
        if kind.build is not None:
            built += list(kind.build({"b": [], "a": []}))
        built += TAIL_FIELDS
        definition = DEFINITIONS[kind.type]
        # Fields a family lacks are optional in the shared definition, never missing.
        assert set(built) <= set(field_names(definition)), kind.type
        assert required_names(definition) <= set(built), kind.type
        assert [n for n in field_names(definition) if n in built] == built, kind.type


def test_news_and_order_definitions_equal_their_tables():
    assert field_names(NewsEvent) == (*COMMON_FIELDS, *(name for name, _ in NEWS_FIELDS))
    own = (name for name in ORDER_UPDATE_FIELDS if name not in COMMON_FIELDS)
    assert field_names(OrderUpdateEvent) == (*COMMON_FIELDS, *own)
    assert DEFINITIONS[NEWS_TYPE] is NewsEvent
    assert DEFINITIONS[ORDER_UPDATE_TYPE] is OrderUpdateEvent


def test_parse_event_types_a_published_event_and_rejects_unknown_ones():
    line = stream_expected("crypto")[0]
    event = parse_event(line)
    assert event["type"] == "trade"
    assert event == json.loads(line)
    with pytest.raises(UnknownEvent):
        parse_event(b'{"type": "weather"}')
    with pytest.raises(UnknownEvent):
        parse_event(b"[1, 2]")
