"""The price publisher against a real Redis: channels, and latest hashes that never regress."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from tasks.price_events import PriceEvent, prepare_price
from tasks.publisher import Publisher
from tests.harness.wait import wait_until
from tests.tasks.payloads import RECEIVED_NS, bar, one_of_each_type

KEYS = Keys("alpaca")
NS = 1_795_530_600_000_000_000  # 2026-11-24T14:30:00Z


@pytest.fixture
def publisher(redis_url: str) -> Iterator[Publisher]:
    client = redis.Redis.from_url(redis_url)
    yield Publisher(client, KEYS, stream_maxlen=1000, dedupe_ttl=60)
    client.close()


class Subscriber:
    """Collects every message of PSUBSCRIBE ``pattern`` on a thread; subscribed on return."""

    def __init__(self, client: redis.Redis, pattern: str) -> None:
        self.messages: list[tuple[str, str]] = []
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(**{pattern: self._on_message})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.01, daemon=True)

    def _on_message(self, message: dict[str, str]) -> None:
        self.messages.append((message["channel"], message["data"]))

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(5)
        self._pubsub.close()


def subscribed(client: redis.Redis, pattern: str) -> Iterator[Subscriber]:
    """A fixture's Subscriber to ``pattern``, yielded once Redis counts it; closed after."""
    sub = Subscriber(client, pattern)
    wait_until(lambda: client.pubsub_numpat() >= 1, 5, message="psubscribed")
    yield sub
    sub.close()


@pytest.fixture
def prices_channel(redis_client: redis.Redis) -> Iterator[Subscriber]:
    yield from subscribed(redis_client, KEYS.prices_pattern)


def events(*raws: dict[str, Any], received: int = RECEIVED_NS) -> list[PriceEvent]:
    return [prepare_price(raw, received) for raw in raws]


def latest(client: redis.Redis, symbol: str, field: str) -> dict[str, Any]:
    value = client.hget(KEYS.latest(symbol), field)
    assert value is not None
    decoded: dict[str, Any] = json.loads(value)
    return decoded


def test_every_type_reaches_its_channel_once_and_the_latest_hash(
    publisher, redis_client, prices_channel
):
    batch = events(*one_of_each_type("AAPL"), *one_of_each_type("MSFT"))
    replaced = publisher.publish_prices(batch)
    assert replaced == 18
    wait_until(lambda: len(prices_channel.messages) >= 18, 5, message="18 messages")
    assert sorted(prices_channel.messages) == sorted(
        (KEYS.prices(e.symbol), e.json.decode()) for e in batch
    )
    for symbol in ("AAPL", "MSFT"):
        held = redis_client.hgetall(KEYS.latest(symbol))
        assert sorted(held) == sorted(
            ["trade", "quote", "bar", "updated_bar", "daily_bar", "status", "luld",
             "correction", "cancel_error"]
        )  # fmt: skip
        assert {json.loads(v)["type"] for v in held.values()} == set(held)


def test_an_older_bar_after_a_newer_one_does_not_regress_the_hash(publisher, redis_client):
    publisher.publish_prices(events(bar("SPY", NS + 60 * 10**9, 2.0)))
    assert publisher.publish_prices(events(bar("SPY", NS, 1.0), received=RECEIVED_NS + 1)) == 0
    assert latest(redis_client, "SPY", "bar")["close"] == 2.0
    publisher.publish_prices(events(bar("SPY", NS + 120 * 10**9, 3.0)))
    assert latest(redis_client, "SPY", "bar")["close"] == 3.0


@pytest.mark.parametrize(("first", "second", "kept"), [(1, 0, 1), (0, 1, 1), (9, 8, 9)])
def test_epochs_differing_only_in_the_last_digit_compare_exactly(
    publisher, redis_client, first, second, kept
):
    base = 1_795_530_600_123_456_780  # as doubles, base + 0..9 are all the same number
    assert float(base + first) == float(base + second)
    publisher.publish_prices(events(bar("SPY", base + first, float(first))))
    publisher.publish_prices(events(bar("SPY", base + second, float(second))))
    assert latest(redis_client, "SPY", "bar")["ts_ns"] == base + kept


def test_epochs_of_different_length_compare_by_magnitude(publisher, redis_client):
    publisher.publish_prices(events(bar("SPY", 10**19, 2.0)))  # year 2286
    publisher.publish_prices(events(bar("SPY", 9_999_999_999_999_999_999 // 10, 1.0)))
    assert latest(redis_client, "SPY", "bar")["ts_ns"] == 10**19


def test_same_bar_time_received_later_replaces_a_cumulative_daily_bar(publisher, redis_client):
    publisher.publish_prices(events(bar("VOO", NS, 1.0, code="d")))
    publisher.publish_prices(events(bar("VOO", NS, 2.0, code="d"), received=RECEIVED_NS + 5))
    assert latest(redis_client, "VOO", "daily_bar")["close"] == 2.0
    # The earlier receipt of the same bar time, processed late, does not win.
    publisher.publish_prices(events(bar("VOO", NS, 1.5, code="d"), received=RECEIVED_NS + 1))
    assert latest(redis_client, "VOO", "daily_bar")["close"] == 2.0


def test_latest_holds_pure_json_and_its_times_sit_in_the_meta_hash(publisher, redis_client):
    publisher.publish_prices(events(bar("SPY", NS, 1.0)))
    assert redis_client.hkeys(KEYS.latest("SPY")) == ["bar"]
    meta = redis_client.hgetall(KEYS.latest_meta("SPY"))
    assert meta == {"bar:ts_ns": str(NS), "bar:received_ns": str(RECEIVED_NS)}
    assert not KEYS.latest_meta("SPY").startswith(KEYS.latest(""))


def test_every_batch_records_its_lag(publisher, redis_client):
    import time

    now = time.time_ns()
    publisher.publish_prices(events(bar("SPY", NS, 1.0), received=now - 2 * 10**9))
    record = redis_client.hgetall(KEYS.prices_published)
    assert record["events"] == "1"
    assert 2 * 10**9 <= int(record["oldest_age_ns"]) < 5 * 10**9
    assert int(record["at_ns"]) >= now


def test_a_time_posing_inside_the_held_json_is_ignored(publisher, redis_client):
    publisher.publish_prices(events(bar("SPY", NS, 1.0)))
    # Before the fix the held time was the first '"ts_ns":' of the stored JSON.
    redis_client.hset(KEYS.latest("SPY"), "bar", '{"x":{"ts_ns":99999999999999999999}}')
    publisher.publish_prices(events(bar("SPY", NS + 1, 2.0)))
    assert latest(redis_client, "SPY", "bar")["close"] == 2.0


def test_a_redelivered_batch_leaves_the_hash_unchanged(publisher, redis_client):
    batch = events(bar("SPY", NS, 1.0))
    assert publisher.publish_prices(batch) == 1
    assert publisher.publish_prices(batch) == 0
    assert latest(redis_client, "SPY", "bar")["close"] == 1.0


def test_a_batch_publishes_every_event_but_writes_only_the_newest(
    publisher, redis_client, prices_channel
):
    raws = [bar("SPY", NS + i * 10**9, float(i)) for i in (3, 1, 4, 1, 5, 2)]
    assert publisher.publish_prices(events(*raws)) == 1
    assert latest(redis_client, "SPY", "bar")["close"] == 5.0
    wait_until(lambda: len(prices_channel.messages) >= 6, 5, message="6 messages")
    assert [json.loads(data)["close"] for _, data in prices_channel.messages] == [3, 1, 4, 1, 5, 2]


def test_concurrent_out_of_order_batches_end_at_the_newest(redis_url, redis_client):
    batches = [events(*(bar("SPY", NS + (i * 7 + j) % 400, float((i * 7 + j) % 400))
                        for j in range(10))) for i in range(40)]  # fmt: skip
    errors: list[BaseException] = []

    def run(part: list[list[PriceEvent]]) -> None:
        client = redis.Redis.from_url(redis_url)
        publisher = Publisher(client, KEYS, stream_maxlen=1000, dedupe_ttl=60)
        try:
            for batch in part:
                publisher.publish_prices(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(batches[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    newest = max(NS + (i * 7 + j) % 400 for i in range(40) for j in range(10))
    assert latest(redis_client, "SPY", "bar")["ts_ns"] == newest


def test_scripts_are_reloaded_after_a_script_flush(publisher, redis_client, prices_channel):
    publisher.publish_prices(events(bar("SPY", NS, 1.0)))
    redis_client.script_flush()
    assert publisher.publish_prices(events(bar("SPY", NS + 1, 2.0))) == 1
    assert latest(redis_client, "SPY", "bar")["close"] == 2.0
    wait_until(lambda: len(prices_channel.messages) >= 2, 5, message="2 messages")
    assert len(prices_channel.messages) == 2  # the reload did not publish twice


def test_an_empty_batch_writes_nothing(publisher, redis_client):
    assert publisher.publish_prices([]) == 0
    assert redis_client.dbsize() == 0


def test_a_batch_of_thousands_of_events_with_unicode_symbols_reaches_every_channel(
    publisher, redis_client, prices_channel
):
    symbols = ["AAPL", "BRK.B", "ÉTÉ", "BTC/USD"]
    events = [
        prepare_price({"T": "t", "S": symbols[i % 4], "p": i, "s": 1, "t": NS + i}, RECEIVED_NS)
        for i in range(5000)
    ]
    publisher.publish_prices(events)
    wait_until(lambda: len(prices_channel.messages) == 5000, 10, message="every event")
    assert prices_channel.messages[:2] == [
        (KEYS.prices("AAPL"), events[0].json.decode()),
        (KEYS.prices("BRK.B"), events[1].json.decode()),
    ]
    held = json.loads(redis_client.hget(KEYS.latest("ÉTÉ"), "trade"))
    assert held["price"] == 4998
