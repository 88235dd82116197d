"""A local Alpaca simulator speaking the real wire protocols.

Start one with ``simulator.Simulator`` (a background thread, for tests) or the
``alpaca-broker simulate`` command (``simulator.cli``). ``alpaca_broker.recording`` depends on
the standard library only; importing it does not load the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.api import Simulator
    from simulator.config import Credentials, SimulatorConfig

__all__ = ["Credentials", "Simulator", "SimulatorConfig"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import alpaca_broker.recording`` stays light for the producer.
    if name == "Simulator":
        from simulator.api import Simulator

        return Simulator
    if name in ("Credentials", "SimulatorConfig"):
        from simulator import config

        return getattr(config, name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")
