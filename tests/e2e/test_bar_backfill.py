"""Bar backfill end to end: fast simulator clock, real producer, real worker, real Redis.

Also issue 26's items 1 and 3 end to end: a gap older than a later reconnect is filled once the
API answers again (the gap ledger), and a big backfill is clipped to BAR_HISTORY_DAYS and never
goes through the live buffer (nothing dropped, every bar kept)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from simulator.api import Simulator
from tasks.bar_history import BarHistory
from tasks.price_events import prepare_price
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.pipeline import Pipeline
from tests.harness.producer import ProducerProcess
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

KEYS = Keys()
SYMBOL = "AAPL"
MINUTE_MS = 60_000
FRESH_MINUTES = 5


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A synthetic market whose clock runs 60 times fast: one bar a second."""
    with Simulator(synthetic=True, rate=5, clock_speed=60, seed=7) as simulator:
        yield simulator


def env(sim: Simulator) -> dict[str, str]:
    return {
        "ALPACA_SYMBOLS": SYMBOL,
        "ALPACA_DATA_CHANNELS": "trades,bars",
        "BAR_BACKFILL_MINUTES": str(FRESH_MINUTES),
        "MARKET_CLOCK_SPEED": "60",
        "MARKET_CLOCK_ORIGIN_NS": str(sim.server.clock._epoch_ns),
    }


def history(client: redis.Redis) -> list[tuple[int, dict[str, Any]]]:
    rows = client.zrange(KEYS.bars(SYMBOL), 0, -1, withscores=True)
    return [(int(score), json.loads(member)) for member, score in rows]


def minutes_of(request: Any) -> list[int]:
    from alpaca_broker.timestamps import parse_rfc3339

    first = parse_rfc3339(request.params["start"].replace("+00:00", "Z")) // 1_000_000
    last = parse_rfc3339(request.params["end"].replace("+00:00", "Z")) // 1_000_000
    return list(range(first, last + 1, MINUTE_MS))


def contiguous(rows: list[tuple[int, dict[str, Any]]]) -> bool:
    scores = [s for s, _ in rows]
    return scores == list(range(scores[0], scores[-1] + MINUTE_MS, MINUTE_MS))


def backfilled_gap(
    sim: Simulator, client: redis.Redis, held: int, at_least: int
) -> tuple[list[int], list[tuple[int, dict[str, Any]]]]:
    """The minutes the first successful bars request fetched (starting the minute after the
    ``held`` one, ``at_least`` of them), and the history once the stream has passed them
    (contiguous)."""
    wait_until(lambda: [r for r in sim.bars_requests() if r.status == 200], 30)
    gap = minutes_of(sim.bars_requests()[0])
    assert gap[0] == held + MINUTE_MS
    assert len(gap) >= at_least
    wait_until(lambda: history(client)[-1][0] > gap[-1] + MINUTE_MS, 30)
    rows = history(client)
    assert contiguous(rows), [s for s, _ in rows]
    return gap, rows


def test_an_outage_is_backfilled_once_and_a_fresh_start_fetches_the_window(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    listener = ChannelListener(redis_client)
    pipeline.worker(queues="prices")
    producer = pipeline.producer(streams="prices", **env(sim))
    producer.wait_connected("prices")

    # A fresh start with an empty Redis fetches BAR_BACKFILL_MINUTES of history.
    wait_until(lambda: [r for r in sim.bars_requests() if r.status == 200], 20)
    fresh = sim.bars_requests()[0]
    assert len(minutes_of(fresh)) == FRESH_MINUTES
    wait_until(lambda: len(history(redis_client)) >= FRESH_MINUTES + 3, 30)

    # An outage of several bar intervals, then a reconnect.
    sim.clear_bars_requests()
    sim.reject_upgrades("data", status=503, count=None)
    sim.drop("data")
    wait_until(lambda: producer.stream_state("prices") != "connected", 10)
    before = history(redis_client)[-1][0]
    outage_from = sim.market_now_ns()
    wait_until(lambda: sim.market_now_ns() > outage_from + 6 * 60 * 10**9, 20)
    sim.clear_upgrade_rejections("data")
    producer.wait_connected("prices", timeout=60)
    gap, rows = backfilled_gap(sim, redis_client, before, at_least=5)

    backfilled = [s for s, e in rows if e["source"] == "backfill"]
    assert [s for s in backfilled if s > before] == gap
    assert len(sim.bars_requests()) == 1
    bars_published = Counter(
        e["ts_ns"] // 1_000_000 for e in listener.drain() if e["type"] == "bar"
    )
    assert all(bars_published[s] == 1 for s, _ in rows), bars_published
    assert _backfill(producer)["runs"] >= 2
    assert _backfill(producer)["failures"] == 0


def test_rest_errors_during_backfill_are_retried_and_nothing_is_duplicated(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    listener = ChannelListener(redis_client)
    sim.fail_bars(count=1, status=500)
    sim.fail_bars(count=1, status=429, retry_after=1)
    pipeline.worker(queues="prices")
    producer = pipeline.producer(streams="prices", **env(sim))
    producer.wait_connected("prices")
    streamed = wait_until(
        lambda: [e for e in listener.drain() if e["type"] == "bar" and e["source"] == "stream"],
        20,
    )
    assert streamed  # the stream flows while the backfill fails
    wait_until(lambda: _backfill(producer).get("runs", 0) >= 1, 60)
    statuses = [r.status for r in sim.bars_requests()]
    assert 500 in statuses
    assert statuses[-1] == 200
    assert _backfill(producer)["failures"] >= 1
    wait_until(lambda: len(history(redis_client)) >= FRESH_MINUTES + 2, 30)
    rows = history(redis_client)
    assert contiguous(rows)
    published = Counter(e["ts_ns"] // 1_000_000 for e in listener.drain() if e["type"] == "bar")
    assert all(published[s] == 1 for s, _ in rows), published


def _backfill(producer: ProducerProcess, stream: str = "prices") -> dict[str, Any]:
    """A stream's backfill counters in the producer's health key (empty before)."""
    backfill: dict[str, Any] = (
        producer.health().get("streams", {}).get(stream, {}).get("backfill", {})
    )
    return backfill


def test_a_producer_restarted_after_a_pause_fills_the_pause(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    pipeline.worker(queues="prices")
    first = pipeline.producer(streams="prices", **env(sim))
    first.wait_connected("prices")
    wait_until(lambda: len(history(redis_client)) >= FRESH_MINUTES + 2, 30)
    first.stop()
    paused_from = sim.market_now_ns()
    wait_until(lambda: sim.market_now_ns() > paused_from + 5 * 60 * 10**9, 20)
    held = history(redis_client)[-1][0]
    sim.clear_bars_requests()
    second = pipeline.producer(streams="prices", **env(sim))
    second.wait_connected("prices")
    gap, rows = backfilled_gap(sim, redis_client, held, at_least=4)
    assert {s for s, e in rows if e["source"] == "backfill" and s > held} == set(gap)


def test_a_fresh_crypto_start_fetches_its_window_from_the_crypto_bars_api(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    pair = "BTC/USD"
    pipeline.worker(queues="prices")
    crypto = {"ALPACA_CRYPTO_SYMBOLS": pair, "ALPACA_CRYPTO_CHANNELS": "trades,bars"}
    producer = pipeline.producer(streams="crypto", **env(sim), **crypto)
    producer.wait_connected("crypto")
    wait_until(lambda: _backfill(producer, "crypto").get("runs", 0) >= 1, 30)
    request = next(r for r in sim.bars_requests() if r.status == 200)
    assert request.path == "/v1beta3/crypto/us/bars"
    assert len(minutes_of(request)) == FRESH_MINUTES
    wait_until(lambda: redis_client.zcard(KEYS.bars(pair)) >= FRESH_MINUTES + 1, 30)
    events = [json.loads(row) for row in redis_client.zrange(KEYS.bars(pair), 0, -1)]
    assert {e["asset_class"] for e in events} == {"crypto"}
    assert sum(e["source"] == "backfill" for e in events) == FRESH_MINUTES


def seed_history(sim: Simulator, client: redis.Redis, minutes: range) -> None:
    """Bars of SYMBOL for ``minutes`` (epoch minutes) in P:bars, as a worker stores them."""
    model = sim.server.bars.model
    events = []
    for minute in minutes:
        b = model.minute_bar(SYMBOL, minute)
        raw = {"T": "b", "S": SYMBOL, "t": b.start_ns, "o": b.o, "h": b.h, "l": b.low,
               "c": b.c, "v": int(b.v), "n": b.n, "vw": b.vw}  # fmt: skip
        events.append(prepare_price(raw, b.start_ns + 60 * 10**9))
    BarHistory(client, KEYS, history_days=7).add(events)


def test_a_gap_older_than_a_later_reconnect_is_filled_once_the_api_answers_again(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    """Issue 26, item 1: bars held for minutes +0..+30, a connect at about +60 while REST
    answers 500, the stream delivers bars after it, a reconnect, then REST recovers: the
    minutes from +31 to the first streamed bar end up in P:bars."""
    now = sim.market_now_ns() // (MINUTE_MS * 1_000_000)
    seed_history(sim, redis_client, range(now - 60, now - 29))
    held = history(redis_client)[-1][0]
    sim.fail_bars(count=1_000_000, status=500)  # until cleared
    pipeline.worker(queues="prices")
    producer = pipeline.producer(streams="prices", **env(sim))
    producer.wait_connected("prices")
    wait_until(lambda: len([s for s, _ in history(redis_client) if s > held]) >= 3, 20)
    streamed_from = next(s for s, _ in history(redis_client) if s > held)
    sim.drop("data")  # a reconnect, REST still failing
    wait_until(lambda: producer.health()["streams"]["prices"]["reconnects"] >= 1, 20)
    producer.wait_connected("prices")
    open_while_failing = _backfill(producer).get("gaps", {})
    sim.server.bars.clear_faults()
    wait_until(lambda: contiguous(history(redis_client)), 30, message="the hole filled")
    rows = history(redis_client)
    assert rows[0][0] == held - 30 * MINUTE_MS
    hole = [e["source"] for s, e in rows if held < s < streamed_from]
    assert len(hole) == (streamed_from - held) // MINUTE_MS - 1 >= 20
    assert set(hole) == {"backfill"}
    assert open_while_failing["open"] >= 1
    assert open_while_failing["oldest_from"] is not None
    wait_until(lambda: _backfill(producer)["gaps"]["open"] == 0, 10)
    assert _backfill(producer)["failures"] >= 1


def test_a_day_of_five_symbols_is_clipped_to_the_history_and_kept_whole_beside_the_stream(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    """Issue 26, item 3: BAR_BACKFILL_MINUTES=1440 under BAR_HISTORY_DAYS=0.5 fetches half a
    day, and its 3,600 bars never pass the 1,000-event live buffer: nothing dropped, every
    minute of every symbol in P:bars."""
    symbols = ["AAPL", "AMZN", "META", "MSFT", "NVDA"]
    pipeline.worker(queues="prices")
    producer = pipeline.producer(
        streams="prices",
        **{
            **env(sim),
            "ALPACA_SYMBOLS": ",".join(symbols),
            "BAR_BACKFILL_MINUTES": "1440",
            "BAR_HISTORY_DAYS": "0.5",
            "PRICE_BUFFER_SIZE": "1000",
        },
    )
    producer.wait_connected("prices")
    wait_until(lambda: [r for r in sim.bars_requests() if r.status == 200], 20)
    request = sim.bars_requests()[0]
    window = minutes_of(request)
    assert 718 <= len(window) <= 720  # half a day, not BAR_BACKFILL_MINUTES' whole day
    assert request.params["symbols"] == ",".join(symbols)

    def kept() -> bool:
        pipe = redis_client.pipeline(transaction=False)
        for symbol in symbols:
            pipe.zcount(KEYS.bars(symbol), window[0], window[-1])
        return all(count == len(window) for count in pipe.execute())

    wait_until(kept, 30, message="every backfilled minute of every symbol in P:bars")

    def counted() -> dict[str, Any] | None:  # the heartbeat reports every HEALTH_INTERVAL
        health: dict[str, Any] = producer.health()["streams"]["prices"]
        return health if health["backfill"]["bars"] >= len(symbols) * len(window) else None

    health = wait_until(counted, 20, message="the backfilled bars counted in the health key")
    assert health["dropped"] == 0
    assert health["received"] > 0  # the stream flowed beside it
    assert health["backfill"]["bars"] == len(symbols) * len(window)
