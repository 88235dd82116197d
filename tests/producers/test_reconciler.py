"""The reconciler's passes against a real Redis, with a scripted REST client: which orders it
looks at, and how its watermark moves."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings
from producers.handoff import EventBuffer, Message
from producers.health import StreamStatus
from producers.reconciliation import LOOKBACK_MARGIN_S, Reconciler

KEYS = Keys()


def _order(order_id: str, status: str, filled: str = "0") -> dict[str, Any]:
    return {
        "id": order_id, "symbol": "AAPL", "status": status, "filled_qty": filled, "qty": "1",
        "submitted_at": "2026-11-24T14:30:00Z", "updated_at": "2026-11-24T14:30:01Z",
    }  # fmt: skip


class ScriptedRest:
    """REST as the reconciler sees it: open and closed orders, and every request made."""

    def __init__(self, open_: list[dict[str, Any]], closed: list[dict[str, Any]]) -> None:
        self.open, self.closed = open_, closed
        self.requests: list[GetOrdersRequest] = []
        self.closed_fails = False

    def get_orders(self, request: GetOrdersRequest) -> list[dict[str, Any]]:
        self.requests.append(request)
        if request.status == QueryOrderStatus.CLOSED:
            if self.closed_fails:
                raise ConnectionError("closed orders unavailable")
            return self.closed
        return self.open

    def get_order_by_id(self, order_id: str) -> dict[str, Any]:
        raise AssertionError(f"unexpected lookup of {order_id}")


@pytest.fixture
def buffer() -> EventBuffer[Message]:
    return EventBuffer(StreamStatus("orders"), None)


@pytest.fixture
def reconciler(redis_url: str, buffer: EventBuffer[Message]) -> Reconciler:
    settings = Settings(REDIS_URL=redis_url, _env_file=None)
    return Reconciler(settings, buffer)


def _pass(
    reconciler: Reconciler,
    buffer: EventBuffer[Message],
    rest: ScriptedRest,
    client: redis.Redis,
) -> list[str]:
    """One pass; the IDs of the orders it handed off."""
    reconciler.reconcile_once(cast(TradingClient, rest), client)
    return [item[1]["order"]["id"] for item in buffer.take(1000)]


def test_a_fresh_redis_starts_a_watermark_and_asks_for_open_orders_only(
    reconciler, buffer, redis_client
):
    rest = ScriptedRest([_order("a", "new")], [_order("gone", "filled", "1")])
    assert _pass(reconciler, buffer, rest, redis_client) == ["a"]
    assert [r.status for r in rest.requests] == [QueryOrderStatus.OPEN]
    assert redis_client.get(KEYS.orders_reconciled_at) is not None


def test_orders_closed_since_the_watermark_are_recovered(reconciler, buffer, redis_client):
    redis_client.set(KEYS.orders_reconciled_at, "1764000000.0")
    rest = ScriptedRest([], [_order("unseen", "filled", "1")])
    assert _pass(reconciler, buffer, rest, redis_client) == ["unseen"]
    closed = rest.requests[-1]
    assert closed.status == QueryOrderStatus.CLOSED
    assert closed.after is not None
    assert closed.after.timestamp() == pytest.approx(1764000000.0 - LOOKBACK_MARGIN_S)


def test_the_watermark_moves_to_the_previous_pass_only_after_a_complete_pass(
    reconciler, buffer, redis_client
):
    redis_client.set(KEYS.orders_reconciled_at, "1764000000.0")
    rest = ScriptedRest([_order("open", "new")], [])
    rest.closed_fails = True
    assert _pass(reconciler, buffer, rest, redis_client) == ["open"]  # open orders still diffed
    rest.open = []
    _pass(reconciler, buffer, rest, redis_client)
    assert redis_client.get(KEYS.orders_reconciled_at) == "1764000000.0"  # window kept

    rest.closed_fails = False
    _pass(reconciler, buffer, rest, redis_client)
    assert redis_client.get(KEYS.orders_reconciled_at) == "1764000000.0"
    # Now the previous pass, a complete one, becomes the watermark.
    _pass(reconciler, buffer, rest, redis_client)
    assert float(redis_client.get(KEYS.orders_reconciled_at)) > 1764000000.0
