"""Order lifecycles on the trading stream (alpaca-py TradingStream) and the REST endpoints
(alpaca-py TradingClient), both fed by the one order book."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus
from alpaca.trading.models import Order, TradeAccount, TradeUpdate
from alpaca.trading.requests import GetOrdersRequest
from alpaca.trading.stream import TradingStream

from simulator import Credentials, Simulator, SimulatorConfig
from tests.harness.wait import wait_until
from tests.simulator.conftest import Running, collector


def trading_stream(sim: Simulator, handler, raw: bool = False) -> TradingStream:
    stream = TradingStream("key", "secret", raw_data=raw, url_override=sim.trading_url)
    stream.subscribe_trade_updates(handler)
    return stream


@contextmanager
def raw_trade_updates(sim: Simulator) -> Iterator[list[Any]]:
    """The raw ``trade_updates`` a running, listening TradingStream has received so far."""
    received, handler = collector()
    with Running(trading_stream(sim, handler, raw=True), sim, "trading"):
        wait_until(lambda: sim.stats()["listening"], message="listening")
        yield received


def run_lifecycles(sim: Simulator) -> dict[str, dict[str, Any]]:
    book = sim.orders
    filled = book.submit("AAPL", qty="10", events=("pending_new", "new"))
    book.fill(filled["id"], qty="4", price="187.25")
    book.fill(filled["id"], price="187.30")
    canceled = book.submit(
        "MSFT", qty="5", order_type="limit", limit_price="410.5", client_order_id="my-cancel"
    )
    book.cancel(canceled["id"], pending=True)
    replaced = book.submit(
        "SPY", qty="2", order_type="limit", limit_price="500", time_in_force="gtc"
    )
    replacement = book.replace(replaced["id"], qty="3", limit_price="501.25")
    rejected = book.submit("TSLA", qty="1", side="sell", events=("pending_new",))
    book.reject(rejected["id"])
    expired = book.submit("AMD", notional="250", order_type="market")
    book.expire(expired["id"])
    return {
        "filled": filled,
        "canceled": canceled,
        "replaced": replaced,
        "replacement": replacement,
        "rejected": rejected,
        "expired": expired,
    }


def test_lifecycles_stream_as_trade_updates_that_alpaca_py_parses(sim: Simulator) -> None:
    received, handler = collector()
    with Running(trading_stream(sim, handler), sim, "trading"):
        wait_until(lambda: sim.stats()["listening"], message="listening")
        orders = run_lifecycles(sim)
        wait_until(lambda: len(received) == 14, message="fourteen updates")
    assert all(isinstance(u, TradeUpdate) for u in received)
    events = [(str(u.order.id), u.event) for u in received]
    ids = {name: order["id"] for name, order in orders.items()}
    assert events == [
        (ids["filled"], "pending_new"),
        (ids["filled"], "new"),
        (ids["filled"], "partial_fill"),
        (ids["filled"], "fill"),
        (ids["canceled"], "new"),
        (ids["canceled"], "pending_cancel"),
        (ids["canceled"], "canceled"),
        (ids["replaced"], "new"),
        (ids["replaced"], "replaced"),
        (ids["replacement"], "new"),
        (ids["rejected"], "pending_new"),
        (ids["rejected"], "rejected"),
        (ids["expired"], "new"),
        (ids["expired"], "expired"),
    ]
    partial, fill = received[2], received[3]
    assert isinstance(partial.execution_id, UUID)
    assert partial.qty == 4
    assert partial.price == 187.25
    assert fill.order.status == OrderStatus.FILLED
    assert fill.position_qty == 10
    assert fill.order.filled_avg_price == "187.28"  # (4*187.25 + 6*187.30) / 10, a string
    assert received[8].order.replaced_by == UUID(ids["replacement"])
    assert received[9].order.replaces == UUID(ids["replaced"])
    assert received[11].order.failed_at is not None


def test_raw_trade_updates_carry_decimal_strings_and_nanosecond_timestamps(
    sim: Simulator,
) -> None:
    with raw_trade_updates(sim) as received:
        order = sim.orders.submit("AAPL", qty="1.5")
        sim.orders.fill(order["id"], price="100.125")
        wait_until(lambda: len(received) == 2, message="two updates")
    data = received[1]["data"]
    assert received[1]["stream"] == "trade_updates"
    assert (data["qty"], data["price"], data["position_qty"]) == ("1.5", "100.125", "1.5")
    assert data["order"]["filled_qty"] == "1.5"
    assert data["order"]["qty"] == "1.5"
    assert data["timestamp"].endswith("Z")
    assert len(data["timestamp"].split(".")[1]) <= 10
    UUID(data["execution_id"])
    UUID(data["order"]["asset_id"])


def test_get_orders_agrees_with_the_streamed_events(sim: Simulator) -> None:
    with raw_trade_updates(sim) as received:
        orders = run_lifecycles(sim)
        open_order = sim.orders.submit("QQQ", qty="7", order_type="limit", limit_price="400")
        wait_until(lambda: len(received) == 15, message="all updates")
    latest: dict[str, dict[str, Any]] = {}
    for envelope in received:
        latest[envelope["data"]["order"]["id"]] = envelope["data"]["order"]
    client = TradingClient("key", "secret", url_override=sim.rest_url)
    rest = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500, nested=True))
    assert all(isinstance(o, Order) for o in rest)
    assert {str(o.id) for o in rest} == set(latest)
    client._use_raw_data = True
    for order in client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL)):
        assert order == latest[order["id"]]  # field for field, as streamed
    client._use_raw_data = False
    open_ids = [str(o.id) for o in client.get_orders()]  # default: open, newest first
    assert open_ids == [open_order["id"], orders["replacement"]["id"]]
    closed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert {o.status for o in closed} == {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REPLACED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
    }
    assert client.get_order_by_id(orders["filled"]["id"]).status == OrderStatus.FILLED
    assert str(client.get_order_by_client_id("my-cancel").id) == orders["canceled"]["id"]


def test_get_orders_filters_on_submission_time_symbols_side_limit_and_direction(
    sim: Simulator,
) -> None:
    book = sim.orders
    first = book.submit("AAPL", qty="1")
    middle = book.submit("MSFT", qty="1", side="sell")
    last = book.submit("AAPL", qty="1")
    client = TradingClient("key", "secret", url_override=sim.rest_url)

    def ids(**kwargs) -> list[str]:
        request = GetOrdersRequest(status=QueryOrderStatus.ALL, **kwargs)
        return [str(o.id) for o in client.get_orders(request)]

    assert ids() == [last["id"], middle["id"], first["id"]]  # newest first by default
    assert ids(direction=Sort.ASC, limit=2) == [first["id"], middle["id"]]
    assert ids(symbols=["AAPL"]) == [last["id"], first["id"]]
    assert ids(side=OrderSide.SELL) == [middle["id"]]
    submitted = datetime.fromisoformat(middle["submitted_at"].replace("Z", "+00:00"))
    assert ids(after=submitted - timedelta(microseconds=1)) == [last["id"], middle["id"]]
    assert ids(until=submitted - timedelta(microseconds=1)) == [first["id"]]
    # an order filled after `after` but submitted before it does not show (as on Alpaca)
    book.fill(first["id"])
    first_submitted = datetime.fromisoformat(first["submitted_at"].replace("Z", "+00:00"))
    assert ids(after=first_submitted + timedelta(microseconds=1)) == [last["id"], middle["id"]]
    assert datetime.now(UTC) > first_submitted


def test_account_and_fill_activities_follow_the_fills(sim: Simulator) -> None:
    order = sim.orders.submit("AAPL", qty="10")
    sim.orders.fill(order["id"], qty="4", price="100")
    sim.orders.fill(order["id"], price="101")
    client = TradingClient("key", "secret", url_override=sim.rest_url)
    account = client.get_account()
    assert isinstance(account, TradeAccount)
    assert account.cash == "98994"  # 100000 - 400 - 606
    fills = client.get("/account/activities/FILL", {"direction": "asc"})
    assert [(f["type"], f["qty"], f["price"], f["leaves_qty"]) for f in fills] == [
        ("partial_fill", "4", "100", "6"),
        ("fill", "6", "101", "0"),
    ]
    page = client.get(
        "/account/activities/FILL",
        {"direction": "asc", "page_size": 1, "page_token": fills[0]["id"]},
    )
    assert page == [fills[1]]


def test_rest_requires_the_key_headers_and_rejects_bad_input() -> None:
    config = SimulatorConfig(credentials=Credentials("AKTEST", "secret"))
    with Simulator(config) as sim:
        bare = requests.get(f"{sim.rest_url}/v2/orders", timeout=5)
        assert bare.status_code == 401
        assert bare.json() == {"code": 40110000, "message": "request is not authorized"}
        wrong = TradingClient("AKTEST", "nope", url_override=sim.rest_url)
        with pytest.raises(APIError):
            wrong.get_account()
        client = TradingClient("AKTEST", "secret", url_override=sim.rest_url)
        with pytest.raises(APIError) as missing:
            client.get_order_by_id("7f6f2d0c-4b0e-4a49-9d6c-7a3c1d1c2b3a")
        assert missing.value.status_code == 404
        headers = {"APCA-API-KEY-ID": "AKTEST", "APCA-API-SECRET-KEY": "secret"}
        bad = requests.get(f"{sim.rest_url}/v2/orders?status=weird", headers=headers, timeout=5)
        assert bad.status_code == 422
        assert "status" in bad.json()["message"]
        bad = requests.get(f"{sim.rest_url}/v2/orders?after=yesterday", headers=headers, timeout=5)
        assert bad.status_code == 422


def test_order_changes_while_the_trading_socket_is_down_reach_rest_only(
    sim: Simulator,
) -> None:
    with raw_trade_updates(sim) as received:
        order = sim.orders.submit("AAPL", qty="5")
        wait_until(lambda: len(received) == 1, message="new")
        with sim.outage("trading"):
            wait_until(lambda: sim.stats()["sessions"]["trading"] == 0, message="down")
            sim.orders.fill(order["id"])
            wait_until(
                lambda: sim.stats()["upgrades_rejected"].get("trading"),
                timeout=10,
                message="a reconnect attempt refused with 503",
            )
        wait_until(lambda: sim.stats()["listening"], timeout=15, message="reconnected")
        later = sim.orders.submit("MSFT", qty="1")
        wait_until(lambda: len(received) == 2, message="the next event")
    assert [e["data"]["event"] for e in received] == ["new", "new"]  # no replay of the fill
    assert received[1]["data"]["order"]["id"] == later["id"]
    client = TradingClient("key", "secret", url_override=sim.rest_url)
    assert client.get_order_by_id(order["id"]).status == OrderStatus.FILLED


def test_synthetic_order_flow_runs_lifecycles_that_rest_agrees_with() -> None:
    received, handler = collector()
    every_event = {"new", "fill", "partial_fill", "canceled", "replaced", "rejected", "expired"}
    settled = ("new", "partially_filled", "pending_new", "pending_cancel")
    sim = Simulator(order_rate=20, order_steps=(0.01, 0.05), seed=5)
    with sim, Running(trading_stream(sim, handler, raw=True), sim, "trading"):
        wait_until(
            lambda: {e["data"]["event"] for e in received} >= every_event,
            timeout=20,
            message="every lifecycle",
        )
        sim.set_order_flow(0)
        wait_until(
            lambda: all(
                o["status"] not in settled for o in sim.orders.query(status="all", limit=500)
            ),
            timeout=10,
            message="lifecycles settle",
        )
        count = len(sim.orders.events())
        wait_until(lambda: len(received) == count, message="every event streamed")
        rest = sim.orders.query(status="all", limit=500)
    latest = {e["data"]["order"]["id"]: e["data"]["order"] for e in received}
    for order in rest:
        assert latest[order["id"]] == order
