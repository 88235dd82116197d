"""Supervision: the unit interface, backoff, and the supervisor that runs units in threads.

A producer process is a set of named units (a stream's read loop, its hand-off, the
reconciler, the heartbeat...), each run in its own thread. The supervisor restarts a unit
that dies on a fresh instance after a jittered backoff, stops the whole process on a
:class:`FatalError` (rejected credentials: exit 3), and on SIGTERM stops every unit and lets
each flush what it holds.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from alpaca_broker.errors import FatalError
from alpaca_broker.logs import set_component

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays that double from ``base`` up to ``cap``, each drawn from ``[d/2, d]``.

    Half the range stays fixed so restarts never bunch up at zero; the other half is jitter
    so that many clients do not retry in step (Alpaca answers a reconnect storm with 429).
    """

    base: float = 1.0
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 32)))
        return (rng or random).uniform(ceiling / 2, ceiling)


class ProducerUnit(ABC):
    """One named, long-lived piece of a producer process, run in its own thread.

    The supervisor calls :meth:`run` in a fresh thread (and again after a crash, on a fresh
    instance), :meth:`stop` from another thread to end it, then :meth:`flush` once so that
    whatever the unit still holds is handed on before the process exits.
    """

    name: str

    @abstractmethod
    def run(self) -> None:
        """Work until :meth:`stop` is called (return) or a failure (raise)."""

    @abstractmethod
    def stop(self) -> None:
        """Ask :meth:`run` to return soon; safe to call from any thread, more than once."""

    def flush(self, timeout: float) -> None:  # noqa: B027 - most units hold nothing
        """Hand on what is still held, within ``timeout`` seconds."""

    def snapshot(self) -> dict[str, Any]:
        """State and counters for the health key; extended by units that have them."""
        return {}


ThreadState = Literal["starting", "running", "backoff", "standby", "stopped", "failed"]
UnitFactory = Callable[[], ProducerUnit]


@dataclass
class _Slot:
    name: str
    factory: UnitFactory
    unit: ProducerUnit | None = None
    thread: threading.Thread | None = None
    state: ThreadState = "starting"
    restarts: int = 0
    failures_in_row: int = 0
    started_at: float = 0.0
    restart_at: float = 0.0
    last_error: str | None = None
    outcome: list[BaseException | None] = field(default_factory=list)
    gated: bool = False


class Supervisor:
    """Keeps every unit running until asked to stop or a unit fails fatally.

    A unit that raises (or returns without being asked to) is restarted on a fresh instance
    after an exponential backoff with jitter; the backoff starts over once a unit has run
    for ``stable_after`` seconds. A :class:`FatalError` (rejected credentials) stops the
    whole process with that error's exit code instead.

    ``gated`` units (a stream's read loop, the reconciler) run only while the process is
    active: a standby of an active/standby set holds no Alpaca connection. :meth:`set_active`
    starts them on a fresh instance or stops them (their state is then ``standby``); the
    other units (hand-offs, heartbeat) run throughout, so a deposed holder still sends what
    it holds.
    """

    def __init__(
        self,
        factories: Mapping[str, UnitFactory],
        *,
        backoff: Backoff | None = None,
        shutdown_timeout: float = 10.0,
        stable_after: float = 30.0,
        tick: float = 0.05,
        gated: Collection[str] = (),
    ) -> None:
        self._slots = [_Slot(name, f, gated=name in gated) for name, f in factories.items()]
        self._active = not gated
        self._backoff = backoff or Backoff()
        self._shutdown_timeout = shutdown_timeout
        self._stable_after = stable_after
        self._tick = tick
        self._stop = threading.Event()
        self._exit_code = 0
        self._lock = threading.Lock()

    def add(self, name: str, factory: UnitFactory) -> None:
        """Supervise one more unit (before :meth:`run`)."""
        self._slots.append(_Slot(name, factory))

    def set_active(self, active: bool) -> None:
        """Start (True) or stop (False) the gated units, within one tick; safe from any thread."""
        if active != self._active:
            log.info("%s: %s the gated units", "active" if active else "standby",
                     "starting" if active else "stopping")  # fmt: skip
        self._active = active

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop every unit and return; safe from a signal handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop.is_set()

    def states(self) -> dict[str, dict[str, Any]]:
        """Each unit's thread state, restart count, last error and its own snapshot."""
        with self._lock:
            return {
                slot.name: {
                    "thread": slot.state,
                    "restarts": slot.restarts,
                    "last_error": slot.last_error,
                    **(slot.unit.snapshot() if slot.unit else {}),
                }
                for slot in self._slots
            }

    def run(self) -> int:
        """Start every unit, supervise until stopped, shut down; returns the exit code."""
        for slot in self._slots:
            if slot.gated and not self._active:
                slot.state = "standby"
            else:
                self._start(slot)
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            for slot in self._slots:
                self._check(slot, now)
        self._shutdown()
        return self._exit_code

    def _start(self, slot: _Slot) -> None:
        outcome: list[BaseException | None] = []
        try:
            unit = slot.factory()
        except BaseException as exc:  # a factory failing is a unit failing
            self._on_exit(slot, exc, time.monotonic())
            return
        thread = threading.Thread(
            target=_run_unit, args=(slot.name, unit, outcome), name=f"producer.{slot.name}"
        )
        thread.daemon = True  # a unit stuck in a C call must not keep the process alive
        with self._lock:
            slot.unit, slot.thread, slot.outcome = unit, thread, outcome
            slot.state, slot.started_at = "running", time.monotonic()
        thread.start()

    def _check(self, slot: _Slot, now: float) -> None:
        # Every transition happens here, on the supervisor's own thread.
        if slot.gated and not self._active and slot.state in ("running", "backoff"):
            if slot.state == "running" and slot.unit is not None:
                _quietly(slot.unit.stop, slot.name)  # at once: a deposed holder keeps no socket
            with self._lock:
                slot.state = "standby"
        elif slot.state == "standby":
            if self._active and not (slot.thread and slot.thread.is_alive()):
                self._start(slot)
        elif slot.state == "backoff" and now >= slot.restart_at:
            log.info("restarting %s (restart %d)", slot.name, slot.restarts)
            self._start(slot)
        elif slot.state == "running" and slot.thread and not slot.thread.is_alive():
            self._on_exit(slot, slot.outcome[0] if slot.outcome else None, now)

    def _on_exit(self, slot: _Slot, exc: BaseException | None, now: float) -> None:
        if self._stop.is_set():
            return
        if isinstance(exc, FatalError):
            log.error("%s stopped: %s", slot.name, exc)
            with self._lock:
                slot.state, slot.last_error = "failed", str(exc)
            self._exit_code = exc.exit_code
            self._stop.set()
            return
        if now - slot.started_at >= self._stable_after:
            slot.failures_in_row = 0
        delay = self._backoff.delay(slot.failures_in_row)
        reason = f"{type(exc).__name__}: {exc}" if exc else "returned without being stopped"
        log.warning("%s died (%s); restarting in %.2fs", slot.name, reason, delay)
        with self._lock:
            slot.failures_in_row += 1
            slot.restarts += 1
            slot.last_error = reason
            slot.state, slot.restart_at = "backoff", now + delay

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self._shutdown_timeout
        log.info("stopping %d producer thread(s)", len(self._slots))
        for slot in self._slots:
            if slot.unit and slot.state == "running":
                _quietly(slot.unit.stop, slot.name)
        for slot in self._slots:
            if slot.thread:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
                if slot.thread.is_alive():
                    log.warning("%s did not stop within the shutdown timeout", slot.name)
        for slot in self._slots:
            if slot.unit:
                _quietly(slot.unit.flush, slot.name, max(0.0, deadline - time.monotonic()))
            with self._lock:
                slot.state = "failed" if slot.state == "failed" else "stopped"
        log.info("all producer threads stopped")


def _run_unit(name: str, unit: ProducerUnit, outcome: list[BaseException | None]) -> None:
    set_component(f"producer.{name}")
    try:
        unit.run()
        outcome.append(None)
    except BaseException as exc:
        outcome.append(exc)


def _quietly(call: Callable[..., None], name: str, *args: float) -> None:
    try:
        call(*args)
    except Exception:
        log.exception("%s failed while stopping", name)
