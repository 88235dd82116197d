"""The interface every supervised producer thread implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


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
