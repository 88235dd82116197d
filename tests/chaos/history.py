"""Recording a chaos run as it happens: what reached the queue, what the hashes showed.

* :class:`QueueTap` runs ``MONITOR`` on every data node and keeps the identity of each
  streamed order event a task pushed onto the ``orders`` queue carried (a task's arguments
  are ``[data, received_ns, source]``; kombu's message body is base64 JSON).
* :class:`OrderMonitor` subscribes to ``P:orders`` and polls every order hash the simulator
  knows, keeping each state change it sees (the regression rule judges them).
* :func:`read_received` reads what one producer run read off its trading socket from its
  recording (``ALPACA_RECORD_FILE``).

Each recorder survives Redis restarts and failovers: it reconnects and goes on; what it
misses while Redis is away is what nobody could write then either.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.keys import ORDER_EVENT_TASK, ORDERS_QUEUE, Keys
from simulator.api import Simulator
from tests.chaos.model import EventKey, Observation, key_of_published, key_of_update

KEYS = Keys()
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("a"): 7, ord("b"): 8}
RECONNECT_PAUSE = 0.1


def monitor_arguments(line: bytes) -> list[bytes]:
    """The arguments of one ``MONITOR`` line (``ts [db addr] "CMD" "arg" ...``), unquoted
    the way Redis quoted them (``sdscatrepr``: ``\\"``, ``\\\\``, ``\\n``, ``\\xHH``...)."""
    start = line.find(b'] "')
    if start < 0:
        return []
    args: list[bytes] = []
    i, end = start + 2, len(line)
    while i < end:
        if line[i] != ord('"'):
            i += 1
            continue
        i += 1
        arg = bytearray()
        while i < end and line[i] != ord('"'):
            char = line[i]
            if char == ord("\\") and i + 1 < end:
                nxt = line[i + 1]
                if nxt == ord("x") and i + 3 < end:
                    arg.append(int(line[i + 2 : i + 4], 16))
                    i += 4
                    continue
                arg.append(_ESCAPES.get(nxt, nxt))
                i += 2
                continue
            arg.append(char)
            i += 1
        args.append(bytes(arg))
        i += 1
    return args


def task_event(message: bytes) -> tuple[EventKey, str, str, str] | None:
    """(identity, source, task id, delivery tag) of the order event a kombu task message
    carries, else None (another task, or not a task message). Celery's log names the task
    id; kombu's unacked record (and the project's warnings about it) the delivery tag."""
    try:
        envelope = json.loads(message)
        headers = envelope.get("headers", {})
        if headers.get("task") != ORDER_EVENT_TASK:
            return None
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        tag = envelope.get("properties", {}).get("delivery_tag")
        return key_of_update(args[0]), str(args[2]), str(headers.get("id")), str(tag)
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        return None


class QueueTap:
    """``MONITOR`` on each of ``ports``: the streamed events pushed onto the orders queue,
    each with the tasks that carried it (``ID (tag TAG) at 12.34s``: the task id and the
    delivery tag the workers' logs name, and when it was pushed, in seconds since ``start``).

    ``MONITOR`` shows the commands a server executed, never one it refused (``OOM``,
    ``NOREPLICAS``, ``READONLY``: checked on Valkey 9, Redis 6.2 and 7), so a push seen
    here is a task that was in the queue."""

    def __init__(self, ports: list[int], start: float) -> None:
        self.queued: dict[EventKey, list[str]] = {}
        self._start = start
        self.lines = 0
        self._stop = threading.Event()
        self._connections: list[redis.Connection] = []
        self._threads = [
            threading.Thread(target=self._tap, args=(port,), daemon=True, name=f"tap-{port}")
            for port in ports
        ]
        for thread in self._threads:
            thread.start()

    def _tap(self, port: int) -> None:
        while not self._stop.is_set():
            conn = redis.Connection(host="127.0.0.1", port=port, socket_connect_timeout=1)
            self._connections.append(conn)
            try:
                conn.send_command("MONITOR")
                conn.read_response()
                while not self._stop.is_set():
                    self._line(conn.read_response())
            except (redis.RedisError, OSError, ValueError):
                self._stop.wait(RECONNECT_PAUSE)
            finally:
                with contextlib.suppress(Exception):
                    conn.disconnect()

    def _line(self, line: bytes) -> None:
        self.lines += 1
        if b'"LPUSH" "orders"' not in line and b'"RPUSH" "orders"' not in line:
            return
        args = monitor_arguments(line)
        if len(args) < 3 or args[1] != ORDERS_QUEUE.encode():
            return
        for message in args[2:]:
            found = task_event(message)
            if found is not None and found[1] == "stream":
                tasks = self.queued.setdefault(found[0], [])
                if not any(t.startswith(found[2]) for t in tasks):  # a replica shows it too
                    at = time.monotonic() - self._start
                    tasks.append(f"{found[2]} (tag {found[3]}) at {at:.2f}s")

    def stop(self) -> dict[EventKey, list[str]]:
        self._stop.set()
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                conn.disconnect()
        for thread in self._threads:
            thread.join(5)
        return dict(self.queued)


class OrderMonitor:
    """``P:orders`` as it is published, and each order hash's changes as polled."""

    FIELDS = ("ts_ns", "status", "filled_qty")

    def __init__(self, client: Callable[[], redis.Redis], sim: Simulator, start: float) -> None:
        self.channel: list[EventKey] = []
        self.observations: list[Observation] = []
        self._client = client
        self._sim = sim
        self._start = start
        self._held: dict[str, tuple[Any, ...]] = {}
        self._ids: list[str] = []
        self._known: set[str] = set()
        self._events_seen = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(job,), daemon=True, name=job.__name__)
            for job in (self._listen, self._sweep)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, job: Callable[[redis.Redis], None]) -> None:
        while not self._stop.is_set():
            client = self._client()
            try:
                job(client)
            except (redis.RedisError, OSError):
                self._stop.wait(RECONNECT_PAUSE)
            finally:
                client.close()

    def _listen(self, client: redis.Redis) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(KEYS.orders_channel)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message and message["type"] == "message":
                    self.channel.append(key_of_published(json.loads(message["data"])))
        finally:
            pubsub.close()

    def _sweep(self, client: redis.Redis) -> None:
        while not self._stop.is_set():
            self._learn_orders()
            pipe = client.pipeline(transaction=False)
            ids = list(self._ids)
            for order_id in ids:
                pipe.hmget(KEYS.order(order_id), *self.FIELDS)
            states = pipe.execute() if ids else []
            at = time.monotonic() - self._start
            for order_id, (ts_ns, status, filled) in zip(ids, states, strict=True):
                state = (None if ts_ns is None else int(ts_ns), status, filled)
                if self._held.get(order_id) != state:
                    self._held[order_id] = state
                    self.observations.append(Observation(at, order_id, *state))
            self._stop.wait(0.1)

    def _learn_orders(self) -> None:
        events = self._sim.orders.events()
        for envelope in events[self._events_seen :]:
            order_id = str(envelope["data"]["order"]["id"])
            if order_id not in self._known:
                self._known.add(order_id)
                self._ids.append(order_id)
        self._events_seen = len(events)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


def read_received(path: Path) -> set[EventKey]:
    """Every ``trade_updates`` event in one producer run's recording (a line cut short by a
    SIGKILL, or any line that is not a trading frame, is skipped)."""
    received: set[EventKey] = set()
    if not path.exists():
        return received
    for line in path.read_text(errors="replace").splitlines()[1:]:
        try:
            frame = json.loads(line)
            if frame.get("stream") != "trading":
                continue
            data = frame["data"]
            text = base64.b64decode(data) if frame.get("kind") == "binary" else data
            message = json.loads(text)
            if message.get("stream") == "trade_updates":
                received.add(key_of_update(message["data"]))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            continue
    return received
