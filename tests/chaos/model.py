"""What a chaos run recorded, as plain data: the checker's only input.

An order event's identity is the contract's distinct rule: its order, its event name and its
``execution_id`` when it has one, else its time (``ts_ns``). The same identity is computed
from the simulator's ``trade_updates`` data, from a task's argument, and from a published
``order_update`` event, so the three records can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.clock import parse_time

#: (order id, event name, execution id or ts_ns as decimal digits)
EventKey = tuple[str, str, str]
#: (status, filled_qty) of an order, as REST or ``P:order:{ID}`` holds it (None: absent)
OrderState = tuple[str | None, str | None]


def key_of_update(data: dict[str, Any]) -> EventKey:
    """The identity of a ``trade_updates`` data object (as streamed, or in a task)."""
    distinct = data.get("execution_id") or str(parse_time(data["timestamp"]))
    return (str(data["order"]["id"]), str(data["event"]), str(distinct))


def key_of_published(event: dict[str, Any]) -> EventKey:
    """The identity of an ``order_update`` event in ``P:orders:events`` or on ``P:orders``."""
    distinct = event.get("execution_id") or str(event["ts_ns"])
    return (str(event["order_id"]), str(event["event"]), str(distinct))


@dataclass(frozen=True)
class Observation:
    """One state of ``P:order:{ID}`` the monitor saw, ``at`` seconds into the run
    (``ts_ns`` None: the hash did not exist)."""

    at: float
    order_id: str
    ts_ns: int | None
    status: str | None
    filled_qty: str | None


@dataclass
class History:
    """Everything the checker judges, recorded during and after one run.

    * ``emitted``: every event the simulator's order book emitted, in order (its record);
    * ``rest``: each order's (status, filled_qty) in the simulator's REST book at the end;
    * ``received``: per producer run (``a#3``), the events it read off its trading socket
      (its own recording, ``ALPACA_RECORD_FILE``);
    * ``killed``: the producer runs that were SIGKILLed;
    * ``queued``: the streamed events seen pushed onto the ``orders`` queue (the broker tap),
      each with the tasks that carried it (``ID (tag TAG) at 12.34s``);
    * ``published``: ``P:orders:events`` at the end, decoded, in stream order;
    * ``channel``: the identity of every event seen on ``P:orders``, in order;
    * ``observations``: the order hashes' states as the monitor saw them change;
    * ``hashes``: each order's ``P:order:{ID}`` (status, filled_qty) at the end;
    * ``dead_letters``: the entries of ``P:orders:dead`` at the end;
    * ``last_change``: seconds into the run when the last fault was over and the last
      order had changed; ``converged_at``: when every order hash first equalled REST
      (None: not within the bound).
    """

    emitted: list[EventKey] = field(default_factory=list)
    rest: dict[str, OrderState] = field(default_factory=dict)
    received: dict[str, set[EventKey]] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    queued: dict[EventKey, list[str]] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)
    channel: list[EventKey] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    hashes: dict[str, OrderState] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    last_change: float = 0.0
    converged_at: float | None = None
