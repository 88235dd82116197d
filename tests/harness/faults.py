"""Helpers of the end-to-end fault suite (``tests/faults``).

Freezing and killing a worker while it holds work, and comparing what Redis holds with
what the simulator emitted: the order path's promise is checked event by event.
"""

from __future__ import annotations

import json
import re
import signal
import uuid
from collections import Counter
from typing import Any

import psutil
import redis

from alpaca_broker.keys import ORDER_EVENT_TASK, Keys
from alpaca_broker.settings import Settings
from celery_app.config import create_app
from simulator.api import Simulator
from simulator.clock import parse_time
from simulator.orders import TERMINAL_STATUSES
from tests.harness.producer import ProducerProcess
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess
from tests.tasks.payloads import RECEIVED_NS, trade_update

KEYS = Keys()
#: kombu's Redis transport keeps every delivered, not yet acknowledged order task here.
UNACKED = "unacked"
#: Worker settings under which a dead worker's order tasks come back after 3 s (not 300).
SHORT_VISIBILITY = {"CELERY_VISIBILITY_TIMEOUT": "3"}

#: What makes an order event distinct (the contract): its order, its event name, and its
#: ``execution_id`` when it has one, else its timestamp (as nanoseconds).
EventKey = tuple[str, str, str]


# --- order events -------------------------------------------------------------------------


def order_stream(client: redis.Redis) -> list[dict[str, Any]]:
    """Every entry of ``P:orders:events``, decoded, in stream order."""
    return [json.loads(fields["event"]) for _, fields in client.xrange(KEYS.orders_events)]


def stream_key(event: dict[str, Any]) -> EventKey:
    """The identity of a published ``order_update`` event."""
    distinct = event["execution_id"] or str(event["ts_ns"])
    return (event["order_id"], event["event"], str(distinct))


def envelope_key(envelope: dict[str, Any]) -> EventKey:
    """The identity of a ``trade_updates`` envelope as the simulator sent it."""
    data = envelope["data"]
    distinct = data.get("execution_id") or str(parse_time(data["timestamp"]))
    return (data["order"]["id"], data["event"], str(distinct))


def emitted(sim: Simulator) -> Counter[EventKey]:
    """Every order event the simulator's book emitted so far."""
    return Counter(envelope_key(e) for e in sim.orders.events())


def published(client: redis.Redis) -> Counter[EventKey]:
    """Every order event in ``P:orders:events``."""
    return Counter(stream_key(e) for e in order_stream(client))


def wait_orders_settled(sim: Simulator, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Wait until every order the book knows is in a final status and no new one appeared
    between two polls (the synthetic flow was switched off and its lifecycles ended)."""
    last = -1

    def settled() -> list[dict[str, Any]] | None:
        nonlocal last
        events = sim.orders.events()
        ids = {e["data"]["order"]["id"] for e in events}
        orders = [sim.orders.get(i) for i in ids]
        final = all(o is not None and o["status"] in TERMINAL_STATUSES for o in orders)
        stable, last = len(events) == last, len(events)
        return events if final and stable and events else None

    return wait_until(settled, timeout, interval=0.2, message="every order final")


def assert_each_emitted_event_published_once(
    client: redis.Redis,
    sim: Simulator,
    extra: Counter[EventKey] | None = None,
    timeout: float = 30.0,
) -> Counter[EventKey]:
    """Wait until ``P:orders:events`` holds as many entries as the simulator emitted (plus
    ``extra``), then check that each one is there exactly once. Returns the expected keys."""
    expected = emitted(sim) + (extra or Counter())
    total = sum(expected.values())
    wait_until(
        lambda: client.xlen(KEYS.orders_events) >= total,
        timeout,
        message=f"{total} order events in the stream",
    )
    got = published(client)
    missing, doubled = expected - got, got - expected
    assert not missing, f"order events lost: {sorted(missing)[:5]} ({sum(missing.values())})"
    assert not doubled, f"order events doubled: {sorted(doubled)[:5]} ({sum(doubled.values())})"
    assert max(got.values()) == 1
    return expected


def assert_order_hashes_match_the_book(client: redis.Redis, sim: Simulator) -> int:
    """Every order's ``P:order:{ID}`` shows the book's final status and filled quantity;
    returns how many orders were compared."""
    ids = {e["data"]["order"]["id"] for e in sim.orders.events()}
    for order_id in ids:
        order = sim.orders.get(order_id)
        assert order is not None
        held = client.hgetall(KEYS.order(order_id))
        assert (held.get("status"), held.get("filled_qty")) == (
            order["status"],
            order["filled_qty"],
        ), f"order {order_id}: Redis holds {held.get('status')}, the book {order['status']}"
    return len(ids)


def wait_reconciled_once(sim: Simulator, timeout: float = 15.0) -> None:
    """Wait for the producer's reconciliation at connect (its first REST request)."""
    wait_until(
        lambda: sim.stats()["connections"].get("rest", 0) >= 1,
        timeout,
        message="the start-up reconciliation asked REST",
    )


# --- processes ----------------------------------------------------------------------------


def _family(worker: WorkerProcess) -> list[psutil.Process]:
    main = psutil.Process(worker.pid)
    return [main, *main.children()]


def freeze(worker: WorkerProcess) -> None:
    """SIGSTOP the worker's main process, then its pool children."""
    for proc in _family(worker):
        proc.send_signal(signal.SIGSTOP)


def thaw(worker: WorkerProcess) -> None:
    """SIGCONT what ``freeze`` stopped."""
    for proc in reversed(_family(worker)):
        proc.send_signal(signal.SIGCONT)


def latest_trade_ns(client: redis.Redis, symbol: str) -> int:
    """``ts_ns`` of the trade ``P:latest:{symbol}`` holds (0 when none)."""
    raw = client.hget(KEYS.latest(symbol), "trade")
    return int(json.loads(raw)["ts_ns"]) if raw else 0


_TASK_LINE = re.compile(r"Task [\w.]+\[([0-9a-f-]+)\] (received|succeeded|failed|retry)")


def held_tasks(worker: WorkerProcess) -> set[str]:
    """IDs of the tasks ``worker`` logged as received and not yet as finished."""
    received: set[str] = set()
    finished: set[str] = set()
    for task_id, what in _TASK_LINE.findall(worker.log()):
        (received if what == "received" else finished).add(task_id)
    return received - finished


def kill_holding_tasks(worker: WorkerProcess, timeout: float = 20.0) -> set[str]:
    """SIGKILL ``worker`` at a moment its own log shows tasks in hand (frozen first, so the
    moment is certain, even with other workers on the queue); returns their IDs."""

    def frozen_holding() -> set[str]:
        freeze(worker)
        held = held_tasks(worker)
        if not held:
            thaw(worker)
        return held

    held = wait_until(frozen_holding, timeout, interval=0.01, message="a task in hand")
    worker.kill()
    return held


def wait_producer_running(producer: ProducerProcess, *streams: str, timeout: float = 20) -> None:
    """Wait until ``producer`` itself (not an earlier process's heartbeat that has not
    expired yet) reports ``streams`` connected."""
    assert producer.proc is not None
    pid = producer.proc.pid
    wait_until(
        lambda: producer.health().get("pid") == pid,
        timeout,
        message=f"the heartbeat of pid {pid}",
    )
    producer.wait_connected(*streams, timeout=timeout)


# --- one order task straight to a broker ---------------------------------------------


def send_order(broker_url: str, output_url: str, data: dict[str, Any]) -> None:
    """Send one ``orders.publish_event`` task for ``data`` to ``broker_url``."""
    settings = Settings(REDIS_URL=output_url, CELERY_BROKER_URL=broker_url, _env_file=None)
    create_app(settings).send_task(ORDER_EVENT_TASK, args=[data, RECEIVED_NS, "stream"])


def fill_event() -> dict[str, Any]:
    """A ``fill`` trade update with an execution id of its own."""
    data = trade_update("AAPL", "fill")
    data["execution_id"] = str(uuid.uuid4())
    return data


def wait_published_once(client: redis.Redis, broker: redis.Redis) -> None:
    """Wait for the one order event in ``client`` and its task acknowledged in ``broker``."""
    wait_until(lambda: client.xlen(KEYS.orders_events) >= 1, 30, message="event published")
    wait_until(lambda: broker.hlen(UNACKED) == 0, 15, message="task acknowledged")
    assert client.xlen(KEYS.orders_events) == 1
