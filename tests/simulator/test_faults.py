"""Injected faults and how the real alpaca-py 0.44.0 clients react (reference §3.6)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from alpaca.data.enums import DataFeed
from alpaca.data.live.stock import StockDataStream
from alpaca.trading.stream import TradingStream

from simulator import Credentials, Simulator, SimulatorConfig, messages
from simulator.clock import now_ns
from tests.harness.wait import wait_until
from tests.simulator.conftest import Running, collector, subscribed


def a_trade(trade_id: int = 1) -> list[dict[str, Any]]:
    return [messages.trade("AAPL", now_ns(), trade_id=trade_id, price=10.0, size=1)]


def data_stream(sim: Simulator, handler, **kwargs) -> StockDataStream:
    url = kwargs.pop("url", sim.data_url)
    raw = kwargs.pop("raw_data", True)
    stream = StockDataStream("key", "secret", url_override=url, raw_data=raw, **kwargs)
    stream.subscribe_trades(handler, "AAPL")
    return stream


def test_auth_failure_402_makes_alpaca_py_retry_until_auth_succeeds(sim: Simulator) -> None:
    sim.fail_auth("data", count=2)
    received, handler = collector()
    with Running(data_stream(sim, handler), sim, "data"):
        wait_until(lambda: subscribed(sim), timeout=15, message="subscribed after two 402s")
        stats = sim.stats()
        assert stats["errors_sent"][402] == 2
        assert stats["auth_attempts"]["data"] == 3
        sim.push_market(a_trade())
        wait_until(lambda: received, message="data after the retries")


def test_wrong_credentials_402_are_retried_forever() -> None:
    config = SimulatorConfig(credentials=Credentials("AKTEST", "right"))
    with Simulator(config) as sim:
        _, handler = collector()
        with Running(data_stream(sim, handler), sim, "data"):
            wait_until(
                lambda: sim.stats()["auth_failures"].get("data", 0) >= 2,
                timeout=10,
                message="a second attempt after backoff",
            )
            assert not sim.subscriptions()


def test_second_connection_with_the_same_key_gets_406_until_the_first_leaves(
    sim: Simulator,
) -> None:
    _, first_handler = collector()
    second_received, second_handler = collector()
    first = Running(data_stream(sim, first_handler), sim, "data").__enter__()
    try:
        wait_until(lambda: subscribed(sim), message="first subscribed")
        with Running(data_stream(sim, second_handler), sim, "data"):
            wait_until(
                lambda: sim.stats()["errors_sent"].get(406, 0) >= 1, message="406 for the second"
            )
            assert len(sim.subscriptions()) == 1
            first.stream.stop()  # leaves with a close frame: its slot is free at once
            first.thread.join(10)
            wait_until(
                lambda: (
                    len(sim.subscriptions()) == 1
                    and sim.stats()["sessions"]["data"] == 1
                    and sim.stats()["auth_failures"]["data"] >= 1
                ),
                timeout=15,
                message="the second gets in",
            )
            sim.push_market(a_trade())
            wait_until(lambda: second_received, message="data for the second")
    finally:
        first.stop()


def test_abrupt_drop_keeps_the_slot_for_the_reap_window_then_reconnects(
    sim: Simulator,
) -> None:
    sim.set_reap_seconds(1.5)
    received, handler = collector()
    with Running(data_stream(sim, handler), sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        dropped_at = time.monotonic()
        assert sim.drop("data") == 1  # no close frame: the server keeps the half-dead slot
        wait_until(
            lambda: sim.stats()["errors_sent"].get(406, 0) >= 1,
            timeout=10,
            message="406 inside the reap window",
        )
        # An authenticated session lists `{}` until its subscribe message arrives.
        wait_until(
            lambda: sim.subscriptions() == [{"trades": ["AAPL"]}],
            timeout=15,
            message="back after the window, the full set resubscribed",
        )
        assert time.monotonic() - dropped_at >= 1.5
        sim.push_market(a_trade())
        wait_until(lambda: received, message="data after the reconnect")


def test_insufficient_subscription_409_makes_run_return(sim: Simulator) -> None:
    sim.deny_feed("sip")
    _, handler = collector()
    stream = data_stream(sim, handler, url=sim.data_url_for("sip"), feed=DataFeed.SIP)
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "run() returns after 409"
    stats = sim.stats()
    assert stats["errors_sent"] == {409: 1}
    assert stats["connections"]["data"] == 1  # never retried


def test_silent_socket_is_detected_by_data_timeout_and_replaced(sim: Simulator) -> None:
    received, handler = collector()
    with Running(data_stream(sim, handler, data_timeout=1.0), sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        sim.push_market(a_trade(1))
        wait_until(lambda: received, message="first trade")
        assert sim.silence("data") == 1
        sim.push_market(a_trade(2))  # swallowed: the socket is silent, yet answers pings
        wait_until(
            lambda: sim.stats()["connections"]["data"] == 2,
            timeout=10,
            message="alpaca-py reconnects after data_timeout",
        )
        wait_until(
            lambda: sim.stats()["sessions"]["data"] == 1 and subscribed(sim),
            message="the old socket is gone, the new one subscribed",
        )
        sim.push_market(a_trade(3))
        wait_until(lambda: len(received) == 2, message="data on the new socket")
    assert [m["i"] for m in received] == [1, 3]


def test_slow_client_overflows_its_queue_and_is_disconnected_with_407(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    release = threading.Event()
    received: list[dict[str, Any]] = []

    async def slow(message: dict[str, Any]) -> None:
        received.append(message)
        release.wait(20)  # blocks the stream's loop: the client stops reading

    sim.set_outbound_limit(16)
    with Running(data_stream(sim, slow), sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        sim.set_market_rate(100_000)
        sim.set_market(True)
        wait_until(lambda: sim.stats()["slow_clients"] == 1, timeout=30, message="407")
        sim.set_market(False)
        release.set()
        wait_until(
            lambda: sim.stats()["connections"]["data"] == 2,
            timeout=15,
            message="alpaca-py reconnects after the disconnect",
        )
    assert sim.stats()["errors_sent"][407] == 1
    assert "websocket error, restarting connection" in caplog.text


def test_close_1011_reconnects_and_resubscribes_the_full_set(sim: Simulator) -> None:
    _received, handler = collector()
    stream = data_stream(sim, handler)
    stream.subscribe_quotes(handler, "MSFT", "SPY")
    with Running(stream, sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        before = sim.subscriptions()
        sim.close("data", 1011, "internal error")
        # An authenticated session lists `{}` until its subscribe message arrives.
        wait_until(
            lambda: sim.stats()["connections"]["data"] == 2 and sim.subscriptions() == before,
            timeout=10,
            message="reconnected, the full set resubscribed",
        )


def test_http_429_on_upgrade_is_retried_with_backoff(sim: Simulator) -> None:
    sim.reject_upgrades("data", 429, count=2)
    _, handler = collector()
    with Running(data_stream(sim, handler), sim, "data"):
        wait_until(lambda: subscribed(sim), timeout=15, message="in after two 429s")
    stats = sim.stats()
    assert stats["upgrades_rejected"] == {"data": 2}
    assert stats["connections"]["data"] == 1


@pytest.mark.parametrize("raw_data", [True, False], ids=["raw", "models"])
def test_malformed_frames_and_500_are_logged_and_the_stream_keeps_going(
    sim: Simulator, caplog: pytest.LogCaptureFixture, raw_data: bool
) -> None:
    caplog.set_level(logging.INFO)
    received, handler = collector()
    with Running(data_stream(sim, handler, raw_data=raw_data), sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        for kind in ("not_msgpack", "missing_T", "trade_missing_fields"):
            assert sim.push_malformed(kind) == 1
        sim.send_error(500)
        sim.push_market(a_trade(9))
        wait_until(lambda: received and trade_id(received[-1]) == 9, message="the good trade")
        assert sim.stats()["connections"]["data"] == 1  # same socket throughout
    assert "error during websocket communication" in caplog.text  # the non-msgpack frame
    assert "error: internal error (500)" in caplog.text
    if raw_data:  # the incomplete trade arrives as is; the map without T is ignored
        assert [trade_id(m) for m in received] == [None, 9]
    else:  # the incomplete trade fails validation and is lost (logged)
        assert [trade_id(m) for m in received] == [9]
        assert "validation error" in caplog.text


def trade_id(message: Any) -> int | None:
    return message.get("i") if isinstance(message, dict) else message.id


def test_trading_auth_failure_and_in_stream_error_make_alpaca_py_reconnect(
    sim: Simulator,
) -> None:
    sim.fail_auth("trading", count=1)
    received, handler = collector()
    stream = TradingStream("key", "secret", url_override=sim.trading_url)
    stream.subscribe_trade_updates(handler)
    with Running(stream, sim, "trading"):
        wait_until(lambda: sim.stats()["listening"] == 1, timeout=10, message="listening")
        assert sim.stats()["auth_attempts"]["trading"] == 2
        assert sim.trading_error() == 1
        wait_until(
            lambda: sim.stats()["connections"]["trading"] == 3 and sim.stats()["listening"] == 1,
            timeout=10,
            message="back again",
        )
        sim.orders.submit("AAPL", qty="1")
        wait_until(lambda: received, message="an update after reconnecting")
