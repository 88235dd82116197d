"""Drives the synthetic market: draws messages at the configured rate (or as fast as the
clients take them) and hands them, in frames, to the subscribed data sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgpack

from simulator.bars import BarModel
from simulator.clock import MarketClock, to_timestamp
from simulator.codec import Frame, Message, WireFormat
from simulator.config import SimulatorConfig
from simulator.datastream import DataSession
from simulator.hub import Hub
from simulator.kinds import ENDPOINTS, PATH_OF_ENDPOINT, STOCKS
from simulator.market import SyntheticMarket

log = logging.getLogger(__name__)
PoolFrame = tuple[list[Message], dict[WireFormat, Frame]]
"""A pooled frame's messages and their encodings by wire format."""
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
        self._pools: dict[str, FramePool] = {}  # --pool: per feed

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

    def _wanted(
        self, feed: str, sessions: list[DataSession]
    ) -> tuple[dict[str, set[str]], set[DataSession]]:
        """What to draw for (channel -> symbols), and the sessions that want all of it."""
        market = self.market(feed)
        now = asyncio.get_running_loop().time()
        if now - self._last_emit.get(feed, now) > 1.0:
            market.resync()  # nobody was listening: no stale bars for the newcomers
        self._last_emit[feed] = now
        wanted = wanted_symbols(sessions, self.universe(sessions[0]), feed == "test")
        return wanted, {s for s in sessions if s.subs.covers(wanted)}

    def _emit(self, feed: str, sessions: list[DataSession], count: int) -> None:
        market = self.market(feed)
        wanted, whole = self._wanted(feed, sessions)
        if self._config.pool:
            pool = self._pool(feed, wanted)
            pool.credit += count
            while pool.credit >= self._config.frame_size:
                pool.credit -= self._config.frame_size
                index = pool.next % len(pool.frames)
                msgs, encoded = pool.frames[index]
                pool.next += 1
                if self._config.restamp:  # the same messages at the present time
                    base = market.clock.reserve(len(msgs))
                    msgpack_only = all(s.fmt is WireFormat.MSGPACK for s in sessions)
                    encoded = pool.restamp(index, base, msgpack_only)
                self._hub.deliver(sessions, msgs, whole, encoded)
            return
        msgs = market.clock_messages(wanted) + market.generate(count, wanted)
        size = self._config.frame_size
        for start in range(0, len(msgs), size):
            self._hub.deliver(sessions, msgs[start : start + size], whole)

    async def _emit_max(self, groups: Mapping[str, list[DataSession]]) -> None:
        size = self._config.frame_size
        for feed, sessions in groups.items():
            market = self.market(feed)
            wanted, whole = self._wanted(feed, sessions)
            if self._config.pool:
                for msgs, encoded in self._pool(feed, wanted).frames:
                    await self._hub.deliver_waiting(sessions, msgs, whole, encoded)
                continue
            for _ in range(20):  # several frames per pass; the queue waits are the pacing
                msgs = market.clock_messages(wanted) + market.generate(size, wanted)
                for start in range(0, len(msgs), size):
                    await self._hub.deliver_waiting(sessions, msgs[start : start + size], whole)
        await asyncio.sleep(0)

    def _pool(self, feed: str, wanted: dict[str, set[str]]) -> FramePool:
        """``--pool``: ``feed``'s frames drawn once and sent over and over, each encoded once,
        so that sending costs little beyond compression and the socket and a client's read
        rate is the limit. Their times repeat (unless ``--restamp``): for measuring how fast
        a client reads. Drawn anew when the subscriptions change."""
        signature = tuple(sorted((ch, tuple(sorted(s))) for ch, s in wanted.items()))
        pool = self._pools.get(feed)
        if pool is None or pool.signature != signature:
            market, size = self.market(feed), self._config.frame_size
            frames: list[PoolFrame] = [
                (market.generate(size, wanted), {}) for _ in range(self._config.pool)
            ]
            pool = self._pools[feed] = FramePool(signature, frames)
        return pool


@dataclass
class FramePool:
    """One feed's pooled frames (messages and their encodings) and where sending stands."""

    signature: tuple[tuple[str, tuple[str, ...]], ...]
    frames: list[PoolFrame]
    credit: int = 0  # messages due but not sent yet: whole frames are sent
    next: int = 0
    templates: dict[int, tuple[bytes, list[tuple[int, int]]]] = field(default_factory=dict)

    def restamp(self, index: int, base_ns: int, msgpack_only: bool) -> dict[WireFormat, Frame]:
        """Frame ``index``'s encodings with its messages at ``base_ns``, +1, +2, ...: its
        msgpack patched when every session reads msgpack, else its messages' ``t`` set (and
        the frame encoded anew by the hub)."""
        if msgpack_only:
            return {WireFormat.MSGPACK: self.stamped(index, base_ns)}
        for offset, msg in enumerate(self.frames[index][0]):
            msg["t"] = to_timestamp(base_ns + offset)
        return {}

    def stamped(self, index: int, base_ns: int) -> bytes:
        """Frame ``index`` in msgpack, its messages' ``t`` set to ``base_ns``, +1, +2, ...

        ``--restamp`` patches the 8 bytes of each timestamp in a copy of the frame encoded
        once, instead of a Timestamp per message and a new encoding of the frame (a quarter
        of the simulator's time at 25,000 msgs/s). Every ``t`` is packed as the 64-bit
        timestamp extension (seconds below 2**34: until the year 2514), so its place is
        fixed; a nanosecond part of 0 is still that form's valid encoding.
        """
        template = self.templates.get(index)
        if template is None:
            template = self.templates[index] = _template(self.frames[index][0])
        packed, offsets = template
        frame = bytearray(packed)
        for i, offset in offsets:
            seconds, nanos = divmod(base_ns + i, _NS)
            _TIMESTAMP64.pack_into(frame, offset, nanos << 34 | seconds)
        return bytes(frame)


_TIMESTAMP64 = struct.Struct(">Q")
_NS = 1_000_000_000


def _template(msgs: list[Message]) -> tuple[bytes, list[tuple[int, int]]]:
    """``msgs`` in msgpack, each ``t`` a distinct placeholder, and where each one's 8 bytes
    lie (after the extension's 0xd7 0xff header), by message index."""
    marks = {i: to_timestamp(_NS * (1 + i) + 123_456_789) for i, m in enumerate(msgs) if "t" in m}
    packed = msgpack.packb([{**m, "t": marks[i]} if i in marks else m for i, m in enumerate(msgs)])
    offsets = []
    for i, mark in marks.items():
        header = b"\xd7\xff" + _TIMESTAMP64.pack(mark.nanoseconds << 34 | mark.seconds)
        offsets.append((i, packed.index(header) + 2))
    return packed, offsets
