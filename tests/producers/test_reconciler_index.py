"""Reconciliation finds the orders Redis holds as open through the open-order index, not a
SCAN of every order hash; hashes from before the index are indexed once."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis
from alpaca.trading.client import TradingClient

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings
from producers.buffer import EventBuffer
from producers.health import StreamStatus
from producers.reconciliation import Reconciler
from tests.producers.test_reconciler import ScriptedRest, _order

KEYS = Keys()


class LookupRest(ScriptedRest):
    """REST that also answers lookups of single orders, recording them."""

    def __init__(self) -> None:
        super().__init__([], [])
        self.looked_up: list[str] = []

    def get_order_by_id(self, order_id: str) -> dict[str, Any]:
        self.looked_up.append(order_id)
        return _order(order_id, "filled", "1")


@pytest.fixture
def reconciler(redis_url: str) -> Reconciler:
    settings = Settings(REDIS_URL=redis_url, _env_file=None)
    return Reconciler(settings, EventBuffer(StreamStatus("orders"), None))


def _held(client: redis.Redis, order_id: str, status: str) -> None:
    client.hset(KEYS.order(order_id), mapping={"status": status})


def test_open_orders_come_from_the_index_and_no_scan_runs(
    reconciler: Reconciler, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.set(f"{KEYS.orders_open}:built", "1")  # a Redis indexed already
    _held(redis_client, "open-1", "new")
    _held(redis_client, "final-1", "filled")
    redis_client.sadd(KEYS.orders_open, "open-1", "final-1", "expired-1")
    monkeypatch.setattr(
        redis.Redis, "scan_iter", lambda *a, **k: pytest.fail("reconciliation scanned")
    )
    rest = LookupRest()
    reconciler.reconcile_once(cast(TradingClient, rest), redis_client)
    assert rest.looked_up == ["open-1"]
    # Ids whose hash is final or gone leave the index.
    assert redis_client.smembers(KEYS.orders_open) == {"open-1"}


def test_hashes_from_before_the_index_are_indexed_once(
    reconciler: Reconciler, redis_client: redis.Redis
) -> None:
    _held(redis_client, "old-open", "accepted")
    _held(redis_client, "old-final", "canceled")
    rest = LookupRest()
    reconciler.reconcile_once(cast(TradingClient, rest), redis_client)
    assert rest.looked_up == ["old-open"]
    assert redis_client.get(f"{KEYS.orders_open}:built") == "1"
