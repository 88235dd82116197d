"""The reconciler's passes against a real Redis, with a scripted REST client: which orders it
looks at, and how its watermark moves."""

from __future__ import annotations

import json
import time
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings
from producers import order_diff, reconciliation
from producers.buffer import EventBuffer, Message
from producers.health import StreamStatus
from producers.reconciliation import LOOKBACK_MARGIN_S, Reconciler

KEYS = Keys()


def _order(order_id: str, status: str, filled: str = "0") -> dict[str, Any]:
    return {
        "id": order_id, "symbol": "AAPL", "status": status, "filled_qty": filled, "qty": "1",
        "submitted_at": "2026-11-24T14:30:00Z", "updated_at": "2026-11-24T14:30:01Z",
    }  # fmt: skip


class ScriptedRest:
    """REST as the reconciler sees it: open and closed orders, and every request made.
    ``status=all`` answers both; no paging is honoured (every answer is one short page)."""

    def __init__(self, open_: list[dict[str, Any]], closed: list[dict[str, Any]]) -> None:
        self.open, self.closed = open_, closed
        self.requests: list[GetOrdersRequest] = []
        self.closed_fails = False

    def get_orders(self, request: GetOrdersRequest) -> list[dict[str, Any]]:
        self.requests.append(request)
        if request.status == QueryOrderStatus.OPEN:
            return self.open
        if self.closed_fails:
            raise ConnectionError("orders since the watermark unavailable")
        if request.status == QueryOrderStatus.CLOSED:
            return self.closed
        return [*self.closed, *self.open]

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


def test_orders_submitted_since_the_watermark_whatever_their_status_are_recovered(
    reconciler, buffer, redis_client
):
    redis_client.set(KEYS.orders_reconciled_at, "1764000000.0")
    rest = ScriptedRest([], [_order("unseen", "filled", "1")])
    assert _pass(reconciler, buffer, rest, redis_client) == ["unseen"]
    recent = rest.requests[-1]
    assert (recent.status, recent.direction, recent.until) == (
        QueryOrderStatus.ALL, Sort.DESC, None,
    )  # fmt: skip
    assert recent.after is not None
    assert recent.after.timestamp() == pytest.approx(1764000000.0 - LOOKBACK_MARGIN_S)


def test_the_watermark_moves_to_the_previous_pass_only_after_a_complete_pass(
    reconciler, buffer, redis_client
):
    redis_client.set(KEYS.orders_reconciled_at, "1764000000.0")
    rest = ScriptedRest([_order("open", "new")], [])
    rest.closed_fails = True
    assert _pass(reconciler, buffer, rest, redis_client) == ["open"]  # open orders still diffed
    redis_client.hset(KEYS.order("open"), mapping={"status": "new", "filled_qty": "0"})
    _pass(reconciler, buffer, rest, redis_client)
    assert redis_client.get(KEYS.orders_reconciled_at) == "1764000000.0"  # window kept

    rest.closed_fails = False
    _pass(reconciler, buffer, rest, redis_client)
    assert redis_client.get(KEYS.orders_reconciled_at) == "1764000000.0"
    # Now the previous pass, a complete one, becomes the watermark.
    _pass(reconciler, buffer, rest, redis_client)
    assert float(redis_client.get(KEYS.orders_reconciled_at)) > 1764000000.0


class PagedRest(ScriptedRest):
    """REST that honours ``after`` (exclusive, as Alpaca's) and ``limit`` on open orders."""

    def get_orders(self, request: GetOrdersRequest) -> list[dict[str, Any]]:
        self.requests.append(request)
        orders = self.open if request.status == QueryOrderStatus.OPEN else self.closed
        after = request.after
        chosen = [o for o in orders if after is None or _submitted(o) > after]
        return chosen[: request.limit]


def _submitted(order: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(order["submitted_at"].replace("Z", "+00:00"))


def _at(order_id: str, second: int) -> dict[str, Any]:
    return {**_order(order_id, "new"), "submitted_at": f"2026-11-24T14:30:{second:02d}Z"}


def test_orders_sharing_a_submitted_at_across_a_page_boundary_are_all_seen(
    reconciler, buffer, redis_client, monkeypatch
):
    monkeypatch.setattr(reconciliation, "PAGE", 3)
    # Two orders in one instant straddle the page boundary; Alpaca's `after` is exclusive.
    orders = [_at("o0", 1), _at("o1", 1), _at("t0", 2), _at("t1", 2)]
    rest = PagedRest(orders, [])
    assert sorted(_pass(reconciler, buffer, rest, redis_client)) == ["o0", "o1", "t0", "t1"]
    assert reconciler.complete


def test_more_orders_in_one_instant_than_a_page_is_an_incomplete_pass_never_a_silent_skip(
    reconciler, buffer, redis_client, monkeypatch
):
    monkeypatch.setattr(reconciliation, "PAGE", 3)
    rest = PagedRest([_at(f"t{i}", 2) for i in range(5)], [])
    assert len(_pass(reconciler, buffer, rest, redis_client)) == 3
    assert not reconciler.complete


def test_paging_that_cannot_finish_is_an_incomplete_pass_that_keeps_the_watermark(
    reconciler, buffer, redis_client, monkeypatch
):
    monkeypatch.setattr(reconciliation, "PAGE", 2)
    monkeypatch.setattr(reconciliation, "MAX_PAGES", 2)
    redis_client.set(KEYS.orders_reconciled_at, "1764000000.0")
    rest = PagedRest([_at(f"o{i}", i) for i in range(10)], [])
    found = _pass(reconciler, buffer, rest, redis_client)
    assert found == ["o0", "o1", "o2"]  # what it did read is still handed off (pages overlap)
    assert not reconciler.complete
    _pass(reconciler, buffer, rest, redis_client)
    assert redis_client.get(KEYS.orders_reconciled_at) == "1764000000.0"


@pytest.mark.parametrize(
    "page",
    [None, {"orders": []}, [None, _order("ok", "new")], [{"status": "new"}, _order("ok", "new")]],
    ids=["none", "not-a-list", "none-in-page", "order-without-id"],
)
def test_malformed_pages_and_orders_are_skipped_and_counted(reconciler, buffer, redis_client, page):
    rest = ScriptedRest([], [])
    rest.open = page
    found = _pass(reconciler, buffer, rest, redis_client)
    assert found == (["ok"] if isinstance(page, list) else [])
    assert reconciler.stats.skipped >= 1


class GoneRest(ScriptedRest):
    def get_order_by_id(self, order_id: str) -> dict[str, Any]:
        raise APIError(json.dumps({"code": 40410000, "message": "order not found"}), _Http404())


class _Http404:
    response = SimpleNamespace(status_code=404)


def test_an_open_order_rest_no_longer_knows_is_marked_gone_and_not_looked_up_again(
    reconciler, buffer, redis_client
):
    redis_client.hset(KEYS.order("ghost"), mapping={"status": "new", "filled_qty": "0"})
    rest = GoneRest([_order("live", "new")], [])
    assert _pass(reconciler, buffer, rest, redis_client) == ["live"]
    assert redis_client.hget(KEYS.order("ghost"), reconciliation.GONE_FIELD) is not None
    assert redis_client.hget(KEYS.order("ghost"), "status") == "new"  # the hash is kept
    assert reconciler.stats.skipped == 1
    _pass(reconciler, buffer, rest, redis_client)  # not looked up again: no second skip
    assert reconciler.stats.skipped == 1


def test_a_difference_still_queued_from_the_last_pass_is_not_added_again(
    reconciler, buffer, redis_client
):
    rest = ScriptedRest([_order("a", "new")], [])
    reconciler.reconcile_once(cast(TradingClient, rest), redis_client)
    reconciler.reconcile_once(cast(TradingClient, rest), redis_client)  # broker down: queued
    assert len(buffer) == 1
    buffer.take(10)  # the hand-off sent it; Redis does not show it yet (the task waits)
    reconciler.reconcile_once(cast(TradingClient, rest), redis_client)
    assert len(buffer) == 1


def test_a_state_the_stream_delivered_and_a_task_still_carries_is_not_published_from_rest(
    redis_url, buffer, redis_client, monkeypatch
):
    # A streamed fill waits out a failover in a retrying task: Redis still shows the partial
    # fill, REST the fill. A REST copy now would make the real fill (with its execution_id)
    # a duplicate of the same state, skipped when it lands.
    in_flight = order_diff.InFlight()
    reconciler = Reconciler(
        Settings(REDIS_URL=redis_url, _env_file=None), buffer, in_flight=in_flight
    )
    redis_client.hset(KEYS.order("a"), mapping={"status": "partially_filled", "filled_qty": "1"})
    redis_client.sadd(KEYS.orders_open, "a")
    filled = _order("a", "filled", "2")
    in_flight.note(Message(0, {"event": "fill", "order": dict(filled), "execution_id": "x"}))
    rest = ScriptedRest([filled], [])  # REST as the pass sees it
    assert _pass(reconciler, buffer, rest, redis_client) == []
    # Still not in Redis a minute on: the pipeline lost it, and the next pass recovers it.
    later = time.monotonic() + order_diff.IN_FLIGHT_S
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert _pass(reconciler, buffer, rest, redis_client) == ["a"]


def test_a_streamed_state_rest_has_moved_past_is_still_recovered(redis_url, buffer, redis_client):
    in_flight = order_diff.InFlight()
    reconciler = Reconciler(
        Settings(REDIS_URL=redis_url, _env_file=None), buffer, in_flight=in_flight
    )
    in_flight.note(
        Message(0, {"event": "partial_fill", "order": _order("a", "partially_filled", "1")})
    )
    rest = ScriptedRest([_order("a", "filled", "2")], [])
    redis_client.hset(KEYS.order("a"), mapping={"status": "partially_filled", "filled_qty": "1"})
    redis_client.sadd(KEYS.orders_open, "a")
    assert _pass(reconciler, buffer, rest, redis_client) == ["a"]
