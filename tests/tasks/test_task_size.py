"""A task far larger than Alpaca ever sends is malformed, never published: an order event is
dead-lettered (its dead letter keeps the head of the payload only), a news article and a
market-data message are skipped while the rest of their task flows. Anyone who can write the
broker can queue such a task (docs/deployment.md, "Security model")."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import redis
from celery import Celery

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.keys import NEWS_ARTICLE_TASK, ORDER_EVENT_TASK, PRICES_BATCH_TASK, Keys
from alpaca_broker.settings import Settings
from celery_app.config import create_app
from tasks.news_events import MAX_NEWS_EVENT_BYTES, prepare_news
from tasks.order_events import MAX_ORDER_EVENT_BYTES, prepare_order
from tasks.price_events import MAX_PRICE_EVENT_BYTES, MAX_SYMBOL_CHARS
from tasks.price_frames import prepare_batch
from tests.harness.wait import wait_until
from tests.tasks.payloads import RECEIVED_NS, one_of_each_type, stream_messages, trade_update

KEYS = Keys("alpaca")
EIGHT_MB = 8 * 1024 * 1024
HUGE_ORDER_ID = "00000000-0000-4000-8000-00000000b16b"


def huge_order(size: int = EIGHT_MB) -> dict[str, Any]:
    """A captured fill with ``size`` more bytes in its order object (a hand-built task)."""
    data = trade_update("AAPL", "fill")
    data["order"]["id"] = HUGE_ORDER_ID
    data["order"]["notes"] = "x" * size
    return data


def multi_leg_order() -> dict[str, Any]:
    """A captured fill as an mleg order of four legs, each a full order object."""
    data = trade_update("AAPL", "fill")
    leg = copy.deepcopy(data["order"])
    data["order"]["order_class"] = "mleg"
    data["order"]["legs"] = [{**leg, "id": f"leg-{n}"} for n in range(4)]
    return data


def article(content_bytes: int) -> dict[str, Any]:
    raw = stream_messages("news")[0]
    return {**raw, "content": "y" * content_bytes}


# --- the normalizers ---------------------------------------------------------------------


def test_an_8_mb_order_event_is_malformed_too_large() -> None:
    with pytest.raises(MalformedMessage) as caught:
        prepare_order(huge_order(), RECEIVED_NS, "stream")
    assert caught.value.kind == "order: too large"
    assert len(repr(caught.value.context)) < 200  # the log line shows no 8 MB excerpt


def test_a_multi_leg_order_is_well_within_the_order_bound() -> None:
    event = prepare_order(multi_leg_order(), RECEIVED_NS, "stream")
    assert len(event.json) < MAX_ORDER_EVENT_BYTES / 4


def test_an_order_just_over_the_bound_is_malformed_and_just_under_it_is_not() -> None:
    base = len(prepare_order(huge_order(0), RECEIVED_NS, "stream").json)
    room = MAX_ORDER_EVENT_BYTES - base
    assert len(prepare_order(huge_order(room), RECEIVED_NS, "stream").json) == (
        MAX_ORDER_EVENT_BYTES
    )
    with pytest.raises(MalformedMessage, match="too large"):
        prepare_order(huge_order(room + 1), RECEIVED_NS, "stream")


def test_a_news_article_over_the_bound_is_malformed_and_a_long_one_is_not() -> None:
    assert len(prepare_news(article(200_000), RECEIVED_NS).json) > 200_000
    with pytest.raises(MalformedMessage) as caught:
        prepare_news(article(MAX_NEWS_EVENT_BYTES), RECEIVED_NS)
    assert caught.value.kind == "too large"


def test_a_huge_price_message_is_malformed_and_the_rest_of_its_task_flows() -> None:
    good = one_of_each_type("AAPL")[0]
    huge_conditions = {**good, "c": ["@"] * (MAX_PRICE_EVENT_BYTES // 4)}
    huge_symbol = {**good, "S": "A" * (MAX_SYMBOL_CHARS + 1)}
    items = [[RECEIVED_NS, m] for m in (good, huge_conditions, huge_symbol, good)]
    batch = prepare_batch(items)
    assert len(batch.events) == 2
    assert sorted(m.kind for m in batch.malformed) == ["bad symbol", "too large"]


def test_a_frame_holding_a_huge_price_message_drops_that_message_only() -> None:
    good = {**one_of_each_type("AAPL")[0], "t": msgpack.Timestamp(1_795_530_600, 5)}
    huge_symbol = {**good, "S": "A" * EIGHT_MB}
    frame = base64.b64encode(msgpack.packb([good, huge_symbol, good])).decode("ascii")
    batch = prepare_batch([[RECEIVED_NS, frame]])
    assert len(batch.events) == 2
    assert [m.kind for m in batch.malformed] == ["bad symbol"]


# --- a real worker -------------------------------------------------------------------------


@pytest.fixture
def sender(redis_url: str) -> Iterator[Celery]:
    """A Celery app that only sends, on the test's Redis (as a hand-built task would)."""
    app = create_app(Settings(REDIS_URL=redis_url, _env_file=None))
    yield app
    app.close()


@pytest.mark.slow
def test_a_real_worker_dead_letters_an_8_mb_order_and_skips_huge_news_and_prices(
    redis_url: str, redis_client: redis.Redis, worker_factory: Any, sender: Celery
) -> None:
    worker_factory(redis_url, queues="prices,orders")
    good = one_of_each_type("MSFT")[0]
    huge_price = {**good, "S": "MSFT", "c": ["@"] * (EIGHT_MB // 4)}
    sender.send_task(ORDER_EVENT_TASK, args=[huge_order(), RECEIVED_NS, "stream"])
    sender.send_task(NEWS_ARTICLE_TASK, args=[article(EIGHT_MB), RECEIVED_NS, "stream"])
    sender.send_task(PRICES_BATCH_TASK, args=[[[RECEIVED_NS, huge_price]]])
    # Then ordinary ones, which flow behind them.
    sender.send_task(ORDER_EVENT_TASK, args=[trade_update("AAPL", "new"), RECEIVED_NS, "stream"])
    sender.send_task(NEWS_ARTICLE_TASK, args=[stream_messages("news")[1], RECEIVED_NS, "stream"])
    sender.send_task(PRICES_BATCH_TASK, args=[[[RECEIVED_NS, {**good, "S": "AAPL"}]]])

    wait_until(lambda: redis_client.xlen(KEYS.orders_events) >= 1, 30, message="the new")
    wait_until(lambda: redis_client.xlen(KEYS.news_events) >= 1, 30, message="the article")
    wait_until(lambda: redis_client.hlen(KEYS.latest("AAPL")), 30, message="the AAPL trade")
    wait_until(lambda: redis_client.xlen(KEYS.orders_dead_letter), 30, message="dead letter")

    events = [json.loads(f["event"]) for _, f in redis_client.xrange(KEYS.orders_events)]
    assert [e["order_id"] for e in events] == [trade_update("AAPL", "new")["order"]["id"]]
    assert not redis_client.exists(KEYS.order(HUGE_ORDER_ID))
    assert redis_client.xlen(KEYS.news_events) == 1
    assert not redis_client.exists(KEYS.latest("MSFT"))
    [(_, letter)] = redis_client.xrange(KEYS.orders_dead_letter)
    assert letter["task"] == ORDER_EVENT_TASK
    assert "too large" in letter["reason"]
    assert len(letter["payload"]) < 70 * 1024  # not the 8 MB
    assert letter["payload"].endswith("characters in all)")
    # Once every task is acknowledged, no key of Redis holds anything near the 8 MB.
    wait_until(
        lambda: (
            not any(redis_client.llen(q) for q in ("orders", "prices"))
            and not redis_client.hlen("unacked")
        ),
        30,
        message="every task taken and acknowledged",
    )
    large = {k: redis_client.memory_usage(k) for k in redis_client.scan_iter(count=1000)}
    assert {k: n for k, n in large.items() if (n or 0) > 256 * 1024} == {}
