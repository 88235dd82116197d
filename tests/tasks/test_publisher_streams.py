"""Crypto, option and news events into a real Redis: channels, latest hashes, news once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from tasks.news_events import prepare_news
from tasks.news_publisher import NewsPublisher
from tasks.price_events import prepare_price
from tests.harness.wait import wait_until
from tests.tasks.payloads import RECEIVED_NS, stream_messages
from tests.tasks.test_publisher_prices import Subscriber, publisher

KEYS = Keys("alpaca")
__all__ = ["publisher"]  # the price tests' publisher fixture, used here too


@pytest.fixture
def news_publisher(redis_url: str) -> Iterator[NewsPublisher]:
    client = redis.Redis.from_url(redis_url)
    yield NewsPublisher(client, KEYS, dedupe_ttl=60)
    client.close()


@pytest.fixture
def subscribe(redis_client: redis.Redis) -> Iterator[Any]:
    subs: list[Subscriber] = []

    def start(pattern: str) -> Subscriber:
        sub = Subscriber(redis_client, pattern)
        subs.append(sub)
        wait_until(lambda: redis_client.pubsub_numpat() >= len(subs), 5, message="psubscribed")
        return sub

    yield start
    for sub in subs:
        sub.close()


def crypto(code: str) -> dict[str, Any]:
    return next(m for m in stream_messages("crypto") if m["T"] == code)


def test_crypto_trade_reaches_its_channel_and_the_latest_hash(publisher, redis_client, subscribe):
    channel = subscribe(KEYS.prices_pattern)
    trade = prepare_price(crypto("t"), RECEIVED_NS, "crypto")
    assert publisher.publish_prices([trade]) == 1
    wait_until(lambda: channel.messages, 5, message="trade published")
    assert channel.messages == [(KEYS.prices("AVAX/USD"), trade.json.decode())]
    assert redis_client.hgetall(KEYS.latest("AVAX/USD")) == {"trade": trade.json.decode()}


def test_orderbook_reaches_the_channel_only(publisher, redis_client, subscribe):
    channel = subscribe(KEYS.prices_pattern)
    books = [prepare_price(m, RECEIVED_NS, "crypto") for m in stream_messages("crypto")
             if m["T"] == "o"]  # fmt: skip
    bar = prepare_price(crypto("b"), RECEIVED_NS, "crypto")
    assert publisher.publish_prices([*books, bar]) == 1
    wait_until(lambda: len(channel.messages) >= 3, 5, message="3 messages")
    assert [json.loads(data)["type"] for _, data in channel.messages] == [
        "orderbook",
        "orderbook",
        "bar",
    ]
    assert sorted(redis_client.hgetall(KEYS.latest("BTC/USD"))) == ["bar"]


def test_option_trade_and_quote_reach_the_contracts_latest_hash(publisher, redis_client):
    events = [prepare_price(m, RECEIVED_NS, "us_option") for m in stream_messages("options")]
    publisher.publish_prices(events)
    held = redis_client.hgetall(KEYS.latest("AAPL240315C00172500"))
    assert sorted(held) == ["quote", "trade"]
    assert json.loads(held["trade"])["price"] == 2.85  # the newer of the two trades


def news_stream(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields["event"]) for _, fields in client.xrange(KEYS.news_events)]


def test_news_sent_twice_is_published_once(news_publisher, redis_client, subscribe):
    channel = subscribe(KEYS.news_channel)
    article = prepare_news(stream_messages("news")[0], RECEIVED_NS)
    assert news_publisher.publish_news(article) is True
    assert news_publisher.publish_news(article) is False
    assert [e["id"] for e in news_stream(redis_client)] == [24918784]
    wait_until(lambda: channel.messages, 5, message="article published")
    assert channel.messages == [(KEYS.news_channel, article.json.decode())]
    assert redis_client.get(KEYS.news_seen("24918784")) == str(article.updated_at_ns)
    assert 0 < redis_client.ttl(KEYS.news_seen("24918784")) <= 60


def test_an_update_is_published_once_more_and_an_older_version_after_it_adds_nothing(
    news_publisher, redis_client, subscribe
):
    channel = subscribe(KEYS.news_channel)
    first, other, update = (prepare_news(m, RECEIVED_NS) for m in stream_messages("news"))
    published = [news_publisher.publish_news(e) for e in (first, other, update, update, first)]
    assert published == [True, True, True, False, False]
    assert [(e["id"], e["updated_at"]) for e in news_stream(redis_client)] == [
        (24918784, "2022-01-05T22:00:38Z"),
        (24918785, "2022-01-05T22:01:02.5Z"),
        (24918784, "2022-01-05T22:15:10Z"),
    ]
    wait_until(lambda: len(channel.messages) >= 3, 5, message="3 news messages")
    assert [data for _, data in channel.messages] == [
        e.json.decode() for e in (first, other, update)
    ]


def test_an_older_version_first_then_a_newer_one_are_both_published(news_publisher, redis_client):
    _, _, update = stream_messages("news")
    older = prepare_news({**update, "updated_at": "2022-01-05T22:10:00Z"}, RECEIVED_NS)
    newer = prepare_news(update, RECEIVED_NS)
    assert news_publisher.publish_news(older) is True
    assert news_publisher.publish_news(newer) is True
    assert redis_client.xlen(KEYS.news_events) == 2


def test_news_script_is_loaded_again_after_a_script_flush(news_publisher, redis_client):
    articles = [prepare_news(m, RECEIVED_NS) for m in stream_messages("news")[:2]]
    assert news_publisher.publish_news(articles[0]) is True
    redis_client.script_flush()
    assert news_publisher.publish_news(articles[1]) is True
    assert redis_client.xlen(KEYS.news_events) == 2
