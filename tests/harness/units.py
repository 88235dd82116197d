"""Small producer units for driving the supervisor in tests (no shipped code depends on them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alpaca_broker.errors import CredentialsRejected
from producers.supervisor import ProducerUnit


class CrashingUnit(ProducerUnit):
    """Raises after starting, ``crashes`` times in all (counted across instances); then runs."""

    def __init__(self, name: str, starts: list[float], crashes: int) -> None:
        self.name = name
        self._starts = starts
        self._crashes = crashes
        self._stop = threading.Event()

    def run(self) -> None:
        self._starts.append(time.monotonic())
        if len(self._starts) <= self._crashes:
            raise RuntimeError(f"crash {len(self._starts)}")
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


class RejectedUnit(ProducerUnit):
    """Fails as a stream whose credentials Alpaca rejected."""

    name = "rejected"

    def run(self) -> None:
        raise CredentialsRejected("auth failed (402)")

    def stop(self) -> None:
        pass


class HoldingUnit(ProducerUnit):
    """Buffers ticks while running; ``flush`` writes them to ``out`` (one per line)."""

    def __init__(self, name: str, out: Path, stop_delay: float = 0.0) -> None:
        self.name = name
        self._out = out
        self._stop = threading.Event()
        self._held: list[str] = []
        self._stop_delay = stop_delay
        self.flushed_with: float | None = None

    def run(self) -> None:
        while not self._stop.wait(0.01):
            self._held.append(f"tick-{len(self._held)}")
        time.sleep(self._stop_delay)  # a unit that is slow to wind down

    def stop(self) -> None:
        self._stop.set()

    def flush(self, timeout: float) -> None:
        self.flushed_with = timeout
        self._out.write_text("".join(f"{item}\n" for item in self._held))

    def snapshot(self) -> dict[str, Any]:
        return {"held": len(self._held)}


class StuckUnit(ProducerUnit):
    """Ignores stop(): the supervisor must not wait for it past its shutdown bound."""

    name = "stuck"

    def run(self) -> None:
        threading.Event().wait()

    def stop(self) -> None:
        pass


def factory(make: Callable[[], ProducerUnit]) -> Callable[[], ProducerUnit]:
    return make
