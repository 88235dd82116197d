"""The shipped JSON Schemas are generated from the typed definitions and accept real events."""

from __future__ import annotations

import json

import pytest

from alpaca_broker import event_schemas
from alpaca_broker.events import DEFINITIONS
from tasks.order_events import prepare_order
from tests.harness.event_check import event_validator, invalid_events
from tests.tasks.payloads import RECEIVED_NS, expected_events, stream_expected, trade_updates


def test_committed_schema_files_equal_a_fresh_generation():
    fresh = {name: event_schemas.render(s) for name, s in event_schemas.generate().items()}
    committed = {
        path.name: path.read_text("utf-8") for path in event_schemas.SCHEMA_DIR.glob("*.json")
    }
    assert committed == fresh, "stale: run `python -m alpaca_broker.event_schemas`"


def test_every_event_type_has_a_shipped_schema():
    for kind in DEFINITIONS:
        assert event_schemas.load(kind)["type"] == "object"
    assert set(event_schemas.load("event")["properties"]["type"]["enum"]) == set(DEFINITIONS)


def test_every_captured_event_validates_against_the_schemas():
    raws = [line.decode() for line in expected_events()]
    for name in ("crypto", "options", "news"):
        raws += [line.decode() for line in stream_expected(name)]
    raws += [prepare_order(d, RECEIVED_NS, "stream").json.decode() for d in trade_updates()]
    assert invalid_events(event_validator(), raws) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"price": "1.5"}, "a price as a string"),
        ({"surprise": 1}, "an unknown key"),
        ({"timestamp": "2023-04-06T11:54:26Z"}, "a timestamp without nine digits"),
        ({"type": "weather"}, "an unknown type"),
    ],
)
def test_a_wrong_event_is_rejected(change, why):
    trade = json.loads(expected_events()[1])
    assert trade["type"] == "trade"
    assert invalid_events(event_validator(), [json.dumps({**trade, **change})]), why


def test_a_missing_field_is_rejected():
    trade = json.loads(expected_events()[1])
    del trade["tape"]
    assert invalid_events(event_validator(), [json.dumps(trade)])
