"""Drives the synthetic market: draws messages at the configured rate (or as fast as the
clients take them) and hands them, in frames, to the subscribed data sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping

from simulator.config import SimulatorConfig
from simulator.datastream import DataSession
from simulator.hub import Hub
from simulator.market import SyntheticMarket
from simulator.subscriptions import STOCK_CHANNELS

log = logging.getLogger(__name__)
TEST_SYMBOL = "FAKEPACA"  # the only symbol the test stream serves
_TICK = 0.01


def wanted_symbols(
    sessions: Iterable[DataSession], universe: Iterable[str], test_feed: bool
) -> dict[str, set[str]]:
    """Union of the sessions' subscriptions per channel, ``*`` resolved to ``universe``."""
    everything = {TEST_SYMBOL} if test_feed else set(universe)
    wanted: dict[str, set[str]] = {}
    for session in sessions:
        for channel in STOCK_CHANNELS:
            symbols = session.subs.symbols(channel)
            if not symbols:
                continue
            resolved = everything if "*" in symbols else set(symbols)
            if test_feed:
                resolved = resolved & {TEST_SYMBOL}
            wanted.setdefault(channel, set()).update(resolved)
    return wanted


class MarketEmitter:
    """The synthetic market's clock loop; one random-walk market per data endpoint."""

    def __init__(self, hub: Hub, config: SimulatorConfig) -> None:
        self._hub = hub
        self._config = config
        self.enabled = config.synthetic
        self.rate = config.rate
        self._markets: dict[str, SyntheticMarket] = {}
        self._wake = asyncio.Event()

    def configure(self, *, enabled: bool, rate: float | None) -> None:
        """Switch the market on or off and set its rate (None: as fast as possible)."""
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        self.enabled, self.rate = enabled, rate
        self._wake.set()

    def market(self, feed: str) -> SyntheticMarket:
        """The market behind ``feed`` (created on first use)."""
        market = self._markets.get(feed)
        if market is None:
            cfg = self._config
            market = SyntheticMarket(
                mix=cfg.mix,
                sip=feed in ("sip", "delayed_sip"),
                seed=cfg.seed,
                clock_speed=cfg.clock_speed,
            )
            self._markets[feed] = market
        return market

    def price_of(self, symbol: str) -> float | None:
        """The latest midpoint of ``symbol`` in any market, if it has traded or quoted."""
        for market in self._markets.values():
            price = market.mid(symbol)
            if price is not None:
                return price
        return None

    def _by_feed(self) -> Mapping[str, list[DataSession]]:
        groups: dict[str, list[DataSession]] = {}
        for session in self._hub.ready_data():
            groups.setdefault(session.feed, []).append(session)
        return groups

    async def run(self) -> None:
        """Emit until cancelled."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        budget = 0.0
        while True:
            if not self.enabled:
                self._wake.clear()
                await self._wake.wait()
                last, budget = loop.time(), 0.0
                continue
            groups = self._by_feed()
            if not groups:
                self._hub.subscribed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hub.subscribed.wait(), 0.25)
                last, budget = loop.time(), 0.0
                continue
            if self.rate is None:
                await self._emit_max(groups)
                continue
            now = loop.time()
            budget = min(budget + self.rate * (now - last), max(self.rate, 1.0))
            last = now
            count = int(budget)
            budget -= count
            for feed, sessions in groups.items():
                self._emit(feed, sessions, count)
            await asyncio.sleep(_TICK)

    def _emit(self, feed: str, sessions: list[DataSession], count: int) -> None:
        market = self.market(feed)
        wanted = wanted_symbols(sessions, self._config.symbols, feed == "test")
        msgs = market.clock_messages(wanted) + market.generate(count, wanted)
        size = self._config.frame_size
        for start in range(0, len(msgs), size):
            self._hub.deliver(sessions, msgs[start : start + size])

    async def _emit_max(self, groups: Mapping[str, list[DataSession]]) -> None:
        size = self._config.frame_size
        for feed, sessions in groups.items():
            market = self.market(feed)
            wanted = wanted_symbols(sessions, self._config.symbols, feed == "test")
            for _ in range(20):  # several frames per pass; the queue waits are the pacing
                msgs = market.clock_messages(wanted) + market.generate(size, wanted)
                for start in range(0, len(msgs), size):
                    await self._hub.deliver_waiting(sessions, msgs[start : start + size])
        await asyncio.sleep(0)
