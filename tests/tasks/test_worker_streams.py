"""Crypto batches and news articles through a real worker, sent by name as the producer sends."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from alpaca_broker.keys import NEWS_ARTICLE_TASK, ORDERS_QUEUE, PRICES_BATCH_TASK, Keys
from alpaca_broker.logs import MalformedReporter
from celery_app.config import ORDER_POLICY, DeliveryPolicy
from tasks import news, prices
from tests.harness.wait import wait_until
from tests.tasks.payloads import as_producer_sends, stream_messages
from tests.tasks.test_publisher_prices import Subscriber

pytestmark = pytest.mark.slow

KEYS = Keys("alpaca")
RECEIVED = 1_795_530_600_500_000_000


def test_news_tasks_ride_the_orders_queue_with_the_orders_policy(inproc_worker):
    route = inproc_worker.amqp.router.route({}, NEWS_ARTICLE_TASK)
    assert route["queue"].name == ORDERS_QUEUE
    task = inproc_worker.tasks[NEWS_ARTICLE_TASK]
    assert DeliveryPolicy().annotate(task) == ORDER_POLICY
    assert task.acks_late is True


@pytest.fixture
def fresh_reporters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tasks' rate-limited reporters anew, so this process's other tests log unhindered."""
    for module in (prices, news):
        monkeypatch.setattr(module, "_reporter", MalformedReporter(module.log))


def test_crypto_batch_and_news_articles_flow_through_a_real_worker(
    inproc_worker, redis_client, caplog, fresh_reporters
):
    caplog.set_level(logging.WARNING)
    prices = Subscriber(redis_client, KEYS.prices_pattern)
    news_channel = Subscriber(redis_client, KEYS.news_channel)
    wait_until(lambda: redis_client.pubsub_numpat() >= 2, 5, message="psubscribed")
    try:
        crypto = [as_producer_sends(m, "t") for m in stream_messages("crypto")]
        items: list[Any] = [[RECEIVED + i, raw] for i, raw in enumerate(crypto)]
        items.insert(1, [RECEIVED, {"T": "s", "S": "BTC/USD", "t": 0}])  # no crypto status
        inproc_worker.send_task(PRICES_BATCH_TASK, args=[items, "crypto"])
        articles = [
            as_producer_sends(m, "created_at", "updated_at") for m in stream_messages("news")
        ]
        for data in (articles[0], articles[0], articles[1], articles[2], articles[0]):
            inproc_worker.send_task(NEWS_ARTICLE_TASK, args=[data, RECEIVED, "stream"])
        inproc_worker.send_task(NEWS_ARTICLE_TASK, args=[{"T": "n"}, RECEIVED, "stream"])

        wait_until(lambda: len(prices.messages) >= len(crypto), 15, message="crypto events")
        wait_until(lambda: redis_client.xlen(KEYS.news_events) >= 3, 15, message="3 articles")
        wait_until(lambda: len(news_channel.messages) >= 3, 5, message="3 news messages")
        wait_until(lambda: "skipped malformed news article" in caplog.text, 10)
        published = [json.loads(data) for _, data in prices.messages]
        assert {e["asset_class"] for e in published} == {"crypto"}
        assert sorted(redis_client.hgetall(KEYS.latest("BTC/USD"))) == [
            "bar", "daily_bar", "trade", "updated_bar",
        ]  # fmt: skip
        assert sorted(redis_client.hgetall(KEYS.latest("AVAX/USD"))) == ["trade"]
        stream = [json.loads(f["event"]) for _, f in redis_client.xrange(KEYS.news_events)]
        assert [(e["id"], e["updated_at"]) for e in stream] == [
            (24918784, "2022-01-05T22:00:38.000000000Z"),
            (24918785, "2022-01-05T22:01:02.500000000Z"),
            (24918784, "2022-01-05T22:15:10.000000000Z"),
        ]
        assert [json.loads(d) for _, d in news_channel.messages] == stream
        assert "skipped malformed price message: unknown T" in caplog.text
        assert "Traceback" not in caplog.text
    finally:
        prices.close()
        news_channel.close()
