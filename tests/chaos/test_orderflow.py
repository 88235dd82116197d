"""The order lifecycle the chaos suite asks the simulator for by name: ``done_for_day``."""

from __future__ import annotations

import asyncio

from simulator.orderbook import OrderBook
from simulator.orderflow import OrderFlow


def test_a_done_for_day_order_is_partly_filled_then_done_then_filled_the_next_session() -> None:
    book = OrderBook()
    flow = OrderFlow(book, ["AAPL"], 0, seed=3, step_seconds=(0, 0))
    asyncio.run(flow.lifecycle("done_for_day"))
    events = [e["data"]["event"] for e in book.events()]
    assert events == ["new", "partial_fill", "done_for_day", "fill"]
    order = book.get(book.events()[0]["data"]["order"]["id"])
    assert order is not None
    assert order["status"] == "filled"
    assert order["filled_qty"] == order["qty"]
