"""Drives the synthetic market: draws messages at the configured rate (or as fast as the
clients take them) and hands them, in frames, to the subscribed data sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping

from simulator.bars import BarModel
from simulator.clock import MarketClock
from simulator.config import SimulatorConfig
from simulator.datastream import DataSession
from simulator.hub import Hub
from simulator.kinds import ENDPOINTS, PATH_OF_ENDPOINT, STOCKS
from simulator.market import SyntheticMarket

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
        for channel in session.subs.channels:
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

    def __init__(self, hub: Hub, config: SimulatorConfig, clock: MarketClock) -> None:
        self._hub = hub
        self._config = config
        self.clock = clock
        self.model = BarModel(config.seed)
        self._last_emit: dict[str, float] = {}
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
                asset=ENDPOINTS[PATH_OF_ENDPOINT[feed]][0].asset,
                model=self.model,
                clock=self.clock,
            )
            self._markets[feed] = market
        return market

    def price_of(self, symbol: str) -> float | None:
        """The current midpoint of ``symbol`` (any thread)."""
        return self.model.trade_price(symbol, self.clock.now_ns(), 0.5)

    def universe(self, session: DataSession) -> tuple[str, ...]:
        """What ``*`` means on ``session``'s stream."""
        return self._config.symbols if session.kind is STOCKS else tuple(session.kind.universe)

    def orderbook_snapshots(self, session: DataSession, symbols: list[str]) -> None:
        """Send ``session`` a full book for each symbol it just subscribed to."""
        if not self.enabled or not symbols:
            return
        resolved = self.universe(session) if "*" in symbols else symbols
        msgs = self.market(session.feed).orderbook_snapshots(resolved)
        session.send_data(msgs)

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

    def _wanted(self, feed: str, sessions: list[DataSession]) -> dict[str, set[str]]:
        market = self.market(feed)
        now = asyncio.get_running_loop().time()
        if now - self._last_emit.get(feed, now) > 1.0:
            market.resync()  # nobody was listening: no stale bars for the newcomers
        self._last_emit[feed] = now
        return wanted_symbols(sessions, self.universe(sessions[0]), feed == "test")

    def _emit(self, feed: str, sessions: list[DataSession], count: int) -> None:
        market = self.market(feed)
        wanted = self._wanted(feed, sessions)
        msgs = market.clock_messages(wanted) + market.generate(count, wanted)
        size = self._config.frame_size
        for start in range(0, len(msgs), size):
            self._hub.deliver(sessions, msgs[start : start + size])

    async def _emit_max(self, groups: Mapping[str, list[DataSession]]) -> None:
        size = self._config.frame_size
        for feed, sessions in groups.items():
            market = self.market(feed)
            wanted = self._wanted(feed, sessions)
            for _ in range(20):  # several frames per pass; the queue waits are the pacing
                msgs = market.clock_messages(wanted) + market.generate(size, wanted)
                for start in range(0, len(msgs), size):
                    await self._hub.deliver_waiting(sessions, msgs[start : start + size])
        await asyncio.sleep(0)
