"""Synthetic order flow: orders started at a rate, each running a random lifecycle
(new -> partial_fill -> fill, fill, cancel, replace, reject, expire) on the order book.

``done_for_day`` (new -> partial_fill -> done_for_day -> fill: the rest filled the next
session) is not drawn at random; a caller asks for it by name (the chaos suite does)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence

from simulator.orderbook import OrderBook, OrderError

log = logging.getLogger(__name__)
SCENARIOS: Sequence[tuple[str, float]] = (
    ("fill", 35),
    ("partial_fill", 25),
    ("cancel", 15),
    ("replace", 10),
    ("reject", 5),
    ("expire", 10),
)


class OrderFlow:
    """Starts ``rate`` orders per second (Poisson arrivals) while the rate is positive."""

    def __init__(
        self,
        book: OrderBook,
        symbols: Sequence[str],
        rate: float,
        *,
        seed: int | None = None,
        step_seconds: tuple[float, float] = (0.2, 1.5),
    ) -> None:
        self._book = book
        self._symbols = tuple(symbols)
        self.rate = rate
        self._rng = random.Random(seed)
        self._steps = step_seconds
        self._wake = asyncio.Event()
        self._lifecycles: set[asyncio.Task[None]] = set()

    def set_rate(self, rate: float) -> None:
        """Orders per second; 0 stops new orders (running lifecycles finish)."""
        if rate < 0:
            raise ValueError("order rate must not be negative")
        self.rate = rate
        self._wake.set()

    async def run(self) -> None:
        """Start lifecycles until cancelled."""
        try:
            while True:
                if self.rate <= 0:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._rng.expovariate(self.rate))
                    continue  # the rate changed: draw a new gap
                task = asyncio.get_running_loop().create_task(self.lifecycle())
                self._lifecycles.add(task)
                task.add_done_callback(self._lifecycles.discard)
        finally:
            for task in list(self._lifecycles):
                task.cancel()

    async def _pause(self) -> None:
        await asyncio.sleep(self._rng.uniform(*self._steps))

    async def lifecycle(self, scenario: str | None = None) -> None:
        """Run one order through ``scenario`` (random when None)."""
        rng = self._rng
        names = [name for name, _ in SCENARIOS]
        scenario = scenario or rng.choices(names, weights=[w for _, w in SCENARIOS])[0]
        symbol = rng.choice(self._symbols)
        halves = scenario in ("partial_fill", "done_for_day")
        qty = str(rng.choice((1, 5, 10, 25, 100)) * (2 if halves else 1))
        side = rng.choice(("buy", "sell"))
        book = self._book
        try:
            if scenario == "reject":
                order = book.submit(symbol, qty=qty, side=side, events=("pending_new",))
                await self._pause()
                book.reject(order["id"])
                return
            limit = (
                scenario in ("cancel", "replace", "expire", "done_for_day") or rng.random() < 0.3
            )
            kind = {"order_type": "limit", "limit_price": f"{rng.uniform(20, 500):.2f}"}
            order = book.submit(symbol, qty=qty, side=side, **(kind if limit else {}))
            await self._pause()
            if scenario == "partial_fill":
                book.fill(order["id"], qty=str(int(qty) // 2))
                await self._pause()
                book.fill(order["id"])
            elif scenario == "fill":
                book.fill(order["id"])
            elif scenario == "cancel":
                book.cancel(order["id"], pending=rng.random() < 0.5)
            elif scenario == "expire":
                book.expire(order["id"])
            elif scenario == "replace":
                new = book.replace(order["id"], qty=str(int(qty) + 1))
                await self._pause()
                book.fill(new["id"])
            elif scenario == "done_for_day":
                book.fill(order["id"], qty=str(int(qty) // 2))
                await self._pause()
                book.done_for_day(order["id"])
                await self._pause()
                book.fill(order["id"])
        except OrderError as exc:  # a test (or replay) moved the order on first
            log.debug("order lifecycle %s ended early: %s", scenario, exc)
