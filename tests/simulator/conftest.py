"""Fixtures for the simulator tests: a scripted simulator and alpaca-py streams run on
threads (their ``run()`` blocks), stopped from the test thread."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from simulator import Simulator
from tests.harness.wait import wait_until


class Running:
    """An alpaca-py stream whose ``run()`` runs on its own thread."""

    def __init__(self, stream: Any, sim: Simulator, kind: str) -> None:
        self.stream = stream
        self.sim = sim
        self.kind = kind
        self.thread = threading.Thread(target=stream.run, name=f"alpaca-{kind}", daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        wait_until(
            lambda: self.stream._loop is not None and self.stream._loop.is_running(),
            message="the stream's loop runs",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """stop() from this thread, then close the socket so the 5 s recv poll ends now."""
        if self.thread.is_alive():
            self.stream.stop()
            self.sim.close(self.kind, 1000)
        self.thread.join(10)
        assert not self.thread.is_alive(), "the stream did not stop"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A scripted simulator (no synthetic market, no order flow) on a free port."""
    with Simulator() as simulator:
        yield simulator


def collector() -> tuple[list[Any], Any]:
    """A list and an async handler that appends to it."""
    received: list[Any] = []

    async def handler(message: Any) -> None:
        received.append(message)

    return received, handler


#: The channels every market data stream has (crypto, stock and option alike, bars aside).
MARKET_CHANNELS = ("trades", "quotes", "bars", "updated_bars", "daily_bars")


def subscribe(stream: Any, handler: Any, channels: Iterable[str], *symbols: str) -> None:
    """``stream.subscribe_<channel>(handler, *symbols)`` for each of ``channels``."""
    for channel in channels:
        getattr(stream, f"subscribe_{channel}")(handler, *symbols)


def subscribed(sim: Simulator) -> bool:
    """Whether a data session's subscribe message has been handled (an authenticated session
    lists ``{}`` until then, so ``sim.subscriptions()`` alone is true too early)."""
    return any(row for row in sim.subscriptions())
