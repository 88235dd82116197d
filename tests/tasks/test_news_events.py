"""News normalization against captured articles, and fuzzed."""

from __future__ import annotations

import contextlib
import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.schema import COMMON_FIELDS
from tasks.news_events import NEWS_FIELDS, normalize_news, prepare_news
from tests.tasks.payloads import RECEIVED_NS, as_producer_sends, stream_expected, stream_messages
from tests.tasks.test_price_events import json_values, timestamps


def test_every_captured_article_normalizes_to_the_expected_event():
    produced = [prepare_news(msg, RECEIVED_NS).json for msg in stream_messages("news")]
    assert produced == stream_expected("news")


def test_event_has_the_contract_fields_in_order():
    event = normalize_news(stream_messages("news")[0], RECEIVED_NS)
    assert list(event) == [*COMMON_FIELDS, *(name for name, _ in NEWS_FIELDS)]
    assert event["type"] == "news"
    assert event["symbol"] is None
    assert event["provider"] == "benzinga"
    assert "source" not in event
    assert "asset_class" not in event
    assert event["symbols"] == ["CRSR"]
    assert event["timestamp"] == "2022-01-05T22:00:38.000000000Z"
    assert event["ts_ns"] == 1_641_420_038_000_000_000


def test_rfc3339_times_are_kept_as_sent():
    event = normalize_news(stream_messages("news")[1], RECEIVED_NS)
    assert event["created_at"] == event["updated_at"] == "2022-01-05T22:01:02.5Z"
    assert event["timestamp"] == "2022-01-05T22:01:02.500000000Z"


def test_int_ns_times_as_the_producer_sends_are_formatted_rfc3339():
    raw = as_producer_sends(stream_messages("news")[1], "created_at", "updated_at")
    event = normalize_news(raw, RECEIVED_NS)
    assert event["created_at"] == event["updated_at"] == "2022-01-05T22:01:02.500000000Z"
    assert event["ts_ns"] == 1_641_420_062_500_000_000


def test_msgpack_timestamps_are_accepted_too():
    raw = {**stream_messages("news")[0], "updated_at": msgpack.Timestamp(1_641_420_038, 7)}
    assert normalize_news(raw, RECEIVED_NS)["updated_at"] == "2022-01-05T22:00:38.000000007Z"


def test_an_update_is_the_same_id_with_a_later_version():
    first, _, update = (prepare_news(m, RECEIVED_NS) for m in stream_messages("news"))
    assert first.id == update.id == "24918784"
    assert update.updated_at_ns > first.updated_at_ns
    assert json.loads(update.json)["headline"].startswith("UPDATE:")


def test_absent_optional_fields_are_null():
    raw = {"T": "n", "id": 1, "headline": "H", "created_at": 0, "updated_at": 0}
    event = normalize_news(raw, RECEIVED_NS)
    for name in ("summary", "author", "content", "url", "symbols", "provider"):
        assert event[name] is None


MALFORMED = [
    ("not a map", ["n"], "not a map"),
    ("market message", {"T": "t", "S": "AAPL"}, "unknown T"),
    ("no id", {"id": None}, "missing keys"),
    ("no updated_at", {"updated_at": None}, "missing keys"),
    ("boolean id", {"id": True}, "bad id"),
    ("id with a colon", {"id": "a:b"}, "bad id"),
    ("headline not text", {"headline": 5}, "bad headline"),
    ("symbols not a list", {"symbols": "CRSR"}, "bad symbols"),
    ("symbol not text", {"symbols": ["CRSR", 3]}, "bad symbols"),
    ("bad created_at", {"created_at": "yesterday"}, "bad timestamp"),
    ("bad updated_at", {"updated_at": 1.5}, "bad timestamp"),
]


@pytest.mark.parametrize(("case", "change", "kind"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_articles_raise_with_their_kind(case, change, kind):
    raw = change if isinstance(change, list) else {**stream_messages("news")[0], **change}
    with pytest.raises(MalformedMessage) as caught:
        normalize_news(raw, RECEIVED_NS)
    assert caught.value.kind == kind


@pytest.mark.parametrize(("received", "source"), [(None, "stream"), (RECEIVED_NS, "socket")])
def test_bad_receive_time_or_source_is_malformed(received, source):
    with pytest.raises(MalformedMessage):
        normalize_news(stream_messages("news")[0], received, source)


article_keys = st.sampled_from(
    ["T", "id", "headline", "summary", "author", "content", "url", "symbols", "source"]
)


@settings(deadline=None)
@given(
    st.dictionaries(article_keys | st.text(max_size=3), json_values, max_size=10),
    st.sampled_from(["n", "t", "?"]),
    st.one_of(st.integers(), st.text(max_size=5), json_values),
    timestamps,
    timestamps,
    st.one_of(st.integers(), json_values),
)
def test_normalizer_raises_nothing_but_malformed_on_arbitrary_maps(
    raw, code, article_id, created, updated, received
):
    raw = {**raw, "T": code, "id": article_id, "created_at": created, "updated_at": updated}
    with contextlib.suppress(MalformedMessage):
        prepare_news(raw, received)
