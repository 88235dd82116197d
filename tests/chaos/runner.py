"""One chaos run: start the stack, play the schedule, heal, wait, record, check.

1. The stack starts (tests/chaos/stack.py); the broker tap and the order monitor start.
2. The clock starts: the order flow and the nemesis's lanes play the schedule.
3. When every fault is healed and every order's lifecycle has ended, the run waits (up to
   the contract's 3 minutes) until every order hash equals REST.
4. The producers are stopped with SIGTERM (each flushes its buffers and its recording) and
   the queue drains; then Redis is read and the checker judges the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.keys import ORDERS_QUEUE, Keys
from alpaca_broker.redis_server import Flavor
from simulator.api import Simulator
from tests.chaos.checker import CONVERGE_WITHIN, Verdict, check
from tests.chaos.history import OrderMonitor, QueueTap, read_received
from tests.chaos.model import History, OrderState, key_of_update
from tests.chaos.nemesis import Applied, Nemesis
from tests.chaos.schedule import Schedule
from tests.chaos.stack import ChaosStack
from tests.harness.faults import UNACKED
from tests.harness.wait import WaitTimeout, wait_until

log = logging.getLogger(__name__)
KEYS = Keys()
DRAIN_WITHIN = 60.0


@dataclass
class Outcome:
    """A finished run: its schedule as applied, its history and the checker's verdict."""

    schedule: Schedule
    flavor: str
    directory: Path
    applied: list[Applied] = field(default_factory=list)
    history: History = field(default_factory=History)
    verdict: Verdict = field(default_factory=Verdict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        """What a failing run prints: the seed, how to replay it, the schedule, the verdict."""
        seed = self.schedule.seed
        lines = [
            f"chaos seed {seed} on {self.flavor}: "
            + ("clean" if self.verdict.ok else f"{len(self.verdict.violations)} violations"),
            f"replay: make chaos SEED={seed} REDIS={self.flavor} "
            f"LENGTH={self.schedule.length:g} MIX={self.schedule.mix}"
            + (f" CUT={self.schedule.cut:g}" if self.schedule.cut is not None else ""),
            *(f"  ! {v}" for v in self.verdict.violations),
            *(f"  note: {n}" for n in self.notes),
            f"counts: {self.verdict.summary()}",
            "timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()),
            self.schedule.describe(),
            "as applied:",
            *(f"  {a}" for a in self.applied),
            f"logs and recordings: {self.directory}",
        ]
        return "\n".join(lines)


class OrderDriver:
    """Starts each scheduled order lifecycle on the simulator's loop at its offset."""

    def __init__(self, sim: Simulator, schedule: Schedule, start: float) -> None:
        self._sim = sim
        self._schedule = schedule
        self._start = start
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="orders")
        self._thread.start()

    def _run(self) -> None:
        flow = self._sim.server.order_flow
        for order in self._schedule.orders:
            self._stop.wait(max(0.0, order.at - (time.monotonic() - self._start)))
            if self._stop.is_set():
                return

            def begin(scenario: str = order.scenario) -> None:
                self._tasks.add(asyncio.get_running_loop().create_task(flow.lifecycle(scenario)))

            self._sim.call(begin)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def finished(self) -> bool:
        """Every order started and every lifecycle ended."""
        return not self._thread.is_alive() and self._sim.call(
            lambda: all(task.done() for task in self._tasks)
        )


def run(
    schedule: Schedule,
    flavor: Flavor,
    directory: Path,
    plant: Callable[[ChaosStack], object] | None = None,
) -> Outcome:
    """Run ``schedule`` on a fresh stack of ``flavor`` in ``directory``; never raises for
    what the checker judges (the verdict says it), only for a harness that broke.

    ``plant`` (the checker's own test) runs once the faults are over, orders still flowing."""
    outcome = Outcome(schedule, flavor, directory)
    began = time.monotonic()
    with Simulator(seed=schedule.sim_seed) as sim, contextlib.ExitStack() as cleanup:
        stack = ChaosStack(directory, schedule.topology, flavor, sim)
        cleanup.callback(stack.stop)
        stack.start()
        outcome.timings["start"] = time.monotonic() - began
        start = time.monotonic()
        tap = QueueTap(stack.data_ports(), start)
        cleanup.callback(tap.stop)
        monitor = OrderMonitor(stack.client, sim, start)
        cleanup.callback(monitor.stop)
        driver = OrderDriver(sim, schedule, start)
        cleanup.callback(driver.stop)
        nemesis = Nemesis(stack, schedule, start)
        cleanup.callback(nemesis.stopping.set)
        outcome.applied = nemesis.run()
        if plant is not None:
            plant(stack)
        wait_until(driver.finished, 60, interval=0.2, message="every order lifecycle ended")
        history = outcome.history
        history.last_change = time.monotonic() - start
        outcome.timings["schedule"] = history.last_change
        history.converged_at = _converge(stack, sim, start, history.last_change)
        if history.converged_at is not None:
            outcome.timings["converge"] = history.converged_at - history.last_change
        stack.stop_producers()  # each flushes its order buffer and its recording
        if not _drained(stack):
            outcome.notes.append(f"the orders queue was not drained in {DRAIN_WITHIN:.0f} s")
        monitor.stop()
        history.queued = tap.stop()
        history.channel, history.observations = monitor.channel, monitor.observations
        _collect(history, stack, sim)
    outcome.verdict = check(outcome.history)
    outcome.timings["total"] = time.monotonic() - began
    (directory / "report.txt").write_text(outcome.report() + "\n")
    return outcome


def _rest(sim: Simulator) -> dict[str, OrderState]:
    states: dict[str, OrderState] = {}
    for envelope in sim.orders.events():
        order_id = str(envelope["data"]["order"]["id"])
        if order_id not in states:
            order = sim.orders.get(order_id)
            assert order is not None
            states[order_id] = (order["status"], order["filled_qty"])
    return states


def _hashes(client: redis.Redis, ids: list[str]) -> dict[str, OrderState]:
    pipe = client.pipeline(transaction=False)
    for order_id in ids:
        pipe.hmget(KEYS.order(order_id), "status", "filled_qty")
    return {order_id: (s, f) for order_id, (s, f) in zip(ids, pipe.execute(), strict=True)}


def _converge(stack: ChaosStack, sim: Simulator, start: float, last: float) -> float | None:
    """Seconds into the run when every order hash first equalled REST (None: not within
    the contract's bound after ``last``)."""
    client = stack.client()

    def equal() -> bool:
        rest = _rest(sim)
        try:
            return _hashes(client, list(rest)) == rest
        except (redis.RedisError, OSError):
            return False

    try:
        wait_until(equal, last + CONVERGE_WITHIN - (time.monotonic() - start), interval=0.5)
    except WaitTimeout:
        return None
    finally:
        client.close()
    return time.monotonic() - start


def _drained(stack: ChaosStack) -> bool:
    client = stack.client()
    try:
        wait_until(
            lambda: client.llen(ORDERS_QUEUE) == 0 and client.hlen(UNACKED) == 0,
            DRAIN_WITHIN,
            interval=0.2,
        )
    except WaitTimeout:
        return False
    finally:
        client.close()
    return True


def _collect(history: History, stack: ChaosStack, sim: Simulator) -> None:
    """The simulator's record, the producers' recordings and Redis at the end."""
    history.emitted = [key_of_update(e["data"]) for e in sim.orders.events()]
    history.rest = _rest(sim)
    history.received = {i.label: read_received(i.record) for i in stack.instances}
    history.killed = {i.label for i in stack.instances if i.killed}
    client = stack.client()
    try:
        history.published = [json.loads(f["event"]) for _, f in client.xrange(KEYS.orders_events)]
        history.hashes = _hashes(client, list(history.rest))
        dead: list[Any] = client.xrange(KEYS.orders_dead_letter)
        history.dead_letters = [dict(fields) for _, fields in dead]
    finally:
        client.close()
