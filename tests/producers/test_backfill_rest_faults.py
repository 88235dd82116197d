"""The bar backfill against a failing historical API: a real Redis, the simulator's bars API
(behind the harness's REST proxy for a stall), a real Celery worker, and the producer's price
stream run in this process (read loop, hand-off, backfill, trimmer under a supervisor).

Issue 26, item 2: a page token seen before, paging that never ends, and a request never
answered each end the fetch as a failure (counted, logged once, retried with backoff) instead
of hanging the backfill; the gap stays in the ledger meanwhile and is filled once the API
answers. Item 1 across a takeover: a gap the first holder could not fill is filled by the
next one, though bars streamed since lie after it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from celery import Celery

from alpaca_broker.settings import Settings
from producers import backfill
from producers.streams import STREAMS, Stream, build_stream, task_sender
from producers.supervisor import Supervisor
from simulator.api import Simulator
from tests.e2e.test_bar_backfill import FRESH_MINUTES, KEYS, MINUTE_MS, SYMBOL, sim
from tests.harness.rest_proxy import RestProxy
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

__all__ = ["sim"]  # the bar-backfill suite's market: a minute bar a second


@contextmanager
def price_stream(
    sim: Simulator, redis_url: str, app: Celery, api_url: str | None = None
) -> Iterator[Stream]:
    """The producer's price stream, with its backfill and trimmer, run until the block ends."""
    settings = Settings(
        REDIS_URL=redis_url,
        ALPACA_API_KEY="PKTESTBACKFILL000001",
        ALPACA_SECRET_KEY="test-backfill-secret",
        ALPACA_DATA_STREAM_URL=sim.data_url,
        ALPACA_DATA_API_URL=api_url or sim.data_api_url,
        ALPACA_SYMBOLS=SYMBOL,
        ALPACA_DATA_CHANNELS="trades,bars",
        BAR_BACKFILL_MINUTES=str(FRESH_MINUTES),
        MARKET_CLOCK_SPEED="60",
        MARKET_CLOCK_ORIGIN_NS=str(sim.server.clock._epoch_ns),
        _env_file=None,
    )
    kind = STREAMS["prices"]
    stream = build_stream(
        kind,
        settings,
        task_sender(kind, app, settings),
        None,
        task_sender(kind, app, settings),
    )
    supervisor = Supervisor(stream.units)
    thread = threading.Thread(target=supervisor.run, name="test-producer", daemon=True)
    thread.start()
    try:
        yield stream
    finally:
        supervisor.request_stop()
        thread.join(20)


def stats(stream: Stream) -> dict[str, Any]:
    """The stream's backfill counters, as the health key shows them."""
    found: dict[str, Any] = stream.status.snapshot().get("backfill", {})
    return found


def ledger(client: redis.Redis) -> dict[str, Any]:
    return {s: json.loads(v) for s, v in client.hgetall(KEYS.bar_gaps("prices")).items()}


def held_minutes(client: redis.Redis) -> set[int]:
    return {int(score) for _, score in client.zrange(KEYS.bars(SYMBOL), 0, -1, withscores=True)}


def recorded_gap(client: redis.Redis) -> tuple[int, int]:
    """The symbol's one open gap in the ledger, once recorded: (first, last) minute ms."""
    gaps = wait_until(lambda: ledger(client).get(SYMBOL), 15, message="a gap in the ledger")
    assert len(gaps) == 1
    return gaps[0][0], gaps[0][1]


def filled(client: redis.Redis, gap: tuple[int, int], timeout: float = 20) -> None:
    """Wait until every minute of ``gap`` is in P:bars and the ledger holds nothing."""
    minutes = set(range(gap[0], gap[1] + MINUTE_MS, MINUTE_MS))
    wait_until(
        lambda: minutes <= held_minutes(client) and not ledger(client),
        timeout,
        message=f"the gap {gap} filled and the ledger empty",
    )


@pytest.mark.parametrize(
    ("fault", "error"),
    [("repeat_page_token", "seen before"), ("endless_pages", "more than 2 page(s)")],
)
def test_paging_that_cannot_finish_fails_the_fetch_and_the_gap_is_filled_once_it_can(
    fault: str,
    error: str,
    sim: Simulator,
    redis_client: redis.Redis,
    redis_url: str,
    inproc_worker: Celery,
) -> None:
    getattr(sim.server.bars, fault)(1_000_000)  # every page from now on
    with price_stream(sim, redis_url, inproc_worker) as stream:
        wait_until(lambda: stats(stream).get("failures", 0) >= 1, 10, message="a failure")
        # Two pages at most for a window of five bars, never thousands.
        assert len(sim.bars_requests()) <= 4
        assert error in stats(stream)["last_error"]
        gap = recorded_gap(redis_client)
        assert gap[1] - gap[0] == (FRESH_MINUTES - 1) * MINUTE_MS
        assert stats(stream)["gaps"]["open"] == 1
        sim.server.bars.clear_faults()
        filled(redis_client, gap)
        wait_until(lambda: stats(stream)["gaps"]["open"] == 0, 5)
    assert stats(stream)["runs"] >= 1


def test_a_request_never_answered_times_out_as_a_failure_and_the_gap_is_filled_after(
    sim: Simulator,
    redis_client: redis.Redis,
    redis_url: str,
    inproc_worker: Celery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backfill, "REQUEST_TIMEOUT", 0.5)
    proxy = RestProxy(sim.data_api_url)
    proxy.slow(60)  # longer than this test: a server that never answers
    try:
        with price_stream(sim, redis_url, inproc_worker, api_url=proxy.url) as stream:
            wait_until(lambda: stats(stream).get("failures", 0) >= 1, 10, message="a timeout")
            assert "Timeout" in stats(stream)["last_error"]
            gap = recorded_gap(redis_client)
            proxy.heal()
            filled(redis_client, gap)
    finally:
        proxy.close()


def test_rest_errors_are_logged_once_counted_and_retried_with_backoff_keeping_the_gap(
    sim: Simulator,
    redis_client: redis.Redis,
    redis_url: str,
    inproc_worker: Celery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.fail_bars(count=3, status=500)
    with (
        caplog.at_level(logging.INFO, logger="producers.backfill"),
        price_stream(sim, redis_url, inproc_worker) as stream,
    ):
        gap = recorded_gap(redis_client)
        filled(redis_client, gap)
    assert [r.status for r in sim.bars_requests()] == [500, 500, 500, 200]
    assert stats(stream)["failures"] == 3
    failed = [r for r in caplog.records if "backfill failed" in r.getMessage()]
    assert len(failed) == 1  # once for the spell, with its context
    assert "1 symbol(s) (AAPL)" in failed[0].getMessage()
    assert "page 1" in failed[0].getMessage()
    (recovered,) = [r for r in caplog.records if "succeeded after 3 failure" in r.getMessage()]
    # Backoff: the retries waited at least 0.5 + 1 + 2 seconds in all.
    assert recovered.created - failed[0].created >= 3.5


def test_a_gap_the_first_holder_could_not_fill_is_filled_by_the_next_behind_newer_bars(
    sim: Simulator, redis_client: redis.Redis, redis_url: str, inproc_worker: Celery
) -> None:
    sim.fail_bars(count=1_000_000, status=500)  # the API fails for the whole first holder
    with price_stream(sim, redis_url, inproc_worker):
        gap = recorded_gap(redis_client)
        # The stream delivers bars after the gap: a newest-bar window could no longer see it.
        wait_until(lambda: len({m for m in held_minutes(redis_client) if m > gap[1]}) >= 3, 20)
    assert not held_minutes(redis_client) & set(range(gap[0], gap[1] + 1, MINUTE_MS))
    sim.server.bars.clear_faults()
    with price_stream(sim, redis_url, inproc_worker):  # the next holder, fresh in memory
        filled(redis_client, gap)
