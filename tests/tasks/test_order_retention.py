"""Costs flat over months: a final order's hash expires, an open one's never does, and the
open-order index follows each order's lifecycle (order.lua keeps it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings
from tasks.order_events import prepare_order
from tasks.publisher import Publisher
from tests.tasks.payloads import RECEIVED_NS, trade_update

KEYS = Keys("alpaca")
AAPL_ORDER = "61e69015-8549-4bfd-b9c3-01e75843f47d"
RETENTION = 3 * 86400


@pytest.fixture
def publisher(redis_url: str) -> Iterator[Publisher]:
    client = redis.Redis.from_url(redis_url)
    yield Publisher(client, KEYS, stream_maxlen=1000, dedupe_ttl=3600, order_retention=RETENTION)
    client.close()


def _publish(publisher: Publisher, event: str) -> None:
    publisher.publish_order(prepare_order(trade_update("AAPL", event), RECEIVED_NS, "stream"))


def test_an_open_orders_hash_has_no_ttl_and_is_in_the_index(publisher, redis_client) -> None:
    _publish(publisher, "new")
    assert redis_client.ttl(KEYS.order(AAPL_ORDER)) == -1
    assert redis_client.smembers(KEYS.orders_open) == {AAPL_ORDER}
    _publish(publisher, "partial_fill")
    assert redis_client.ttl(KEYS.order(AAPL_ORDER)) == -1
    assert redis_client.smembers(KEYS.orders_open) == {AAPL_ORDER}


def test_a_final_orders_hash_expires_after_the_retention_and_leaves_the_index(
    publisher, redis_client
) -> None:
    for event in ("new", "partial_fill", "fill"):
        _publish(publisher, event)
    assert RETENTION - 5 <= redis_client.ttl(KEYS.order(AAPL_ORDER)) <= RETENTION
    assert redis_client.smembers(KEYS.orders_open) == set()


def test_an_older_open_event_after_the_final_one_changes_neither(publisher, redis_client) -> None:
    _publish(publisher, "fill")
    _publish(publisher, "new")  # older, redelivered late: the hash keeps the fill
    assert redis_client.hget(KEYS.order(AAPL_ORDER), "status") == "filled"
    assert redis_client.ttl(KEYS.order(AAPL_ORDER)) > 0
    assert redis_client.smembers(KEYS.orders_open) == set()


def test_the_retention_is_a_setting_of_seven_days_by_default() -> None:
    assert Settings(_env_file=None).order_retention == 7 * 86400
    assert Settings(ORDER_RETENTION="60", _env_file=None).order_retention == 60
