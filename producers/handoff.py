"""The hand-off: a stream's read loop appends to a buffer; a thread drains it into Celery.

The read loop must never wait on Redis, so each message goes into an
:class:`~producers.buffer.EventBuffer` (with its receive time, as a
:class:`~producers.buffer.Message`; both in :mod:`producers.buffer`) and :class:`Handoff`, a
unit of its own, sends batches as Celery tasks through a :class:`TaskSender`, holding a batch
and backing off while the broker is unreachable.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack
from celery import Celery

from alpaca_broker.errors import is_retryable
from producers.buffer import EventBuffer, Message, weight
from producers.frames import Frame
from producers.health import StreamStatus
from producers.supervisor import Backoff, ProducerUnit

log = logging.getLogger(__name__)

T = TypeVar("T")


# Fail fast (about half a second) and let the hand-off thread back off and keep its batch:
# Celery's own retry would block the thread for as long as Redis stays down.
SEND_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.3,
}


class TaskSender:
    """One hand-off thread's connection to the broker; not shared between threads.

    The connection is its own, not one of the app's pool: after any failed send it is
    dropped whole (:meth:`discard`) and the next send opens a new one. A pooled producer
    would go back to the pool broken: kombu's declare-with-retry reconnects on a refused
    write (``NOREPLICAS``, ``READONLY``, ``OOM``, ``MISCONF``) and leaves the publish that
    follows on the closed channel (``'NoneType' object has no attribute 'client'``), an error
    no retry policy catches, again on every later send through that producer.
    """

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._producer: Any = None

    def send(self, task_name: str, args: list[Any], argsrepr: str | None = None) -> None:
        """Publish one task message (JSON); raises the broker's error when it cannot.

        ``argsrepr`` is what Flower and the logs show for the arguments (default: Celery's
        repr of them, which for a batch of hundreds of events costs more than it tells).
        """
        self.send_many(task_name, [(args, argsrepr)])

    def send_many(self, task_name: str, tasks: list[tuple[list[Any], str | None]]) -> None:
        """Publish several task messages in one round trip (kombu's ``Producer.batch``: one
        pipeline of LPUSHes); raises the broker's error when it cannot, and then none, some
        or all of them may have been queued (the caller sends them again: at least once).

        Pipelined because the hand-off thread waits for the interpreter lock after every
        reply while the read loop is busy: at the producer's maximum rate one task per round
        trip was the limit, and the read loop dropped what the hand-off could not take.
        """
        if self._producer is None:
            self._producer = self._app.amqp.Producer(self._app.connection_for_write())
        producer = self._producer
        try:
            with producer.batch(max_size=len(tasks) + 1) if len(tasks) > 1 else nullcontext():
                for args, argsrepr in tasks:
                    self._app.send_task(
                        task_name,
                        args=args,
                        producer=producer,
                        retry=True,
                        retry_policy=SEND_RETRY_POLICY,
                        argsrepr=argsrepr,
                    )
        except BaseException:
            self.discard()  # whatever broke, the next send starts on a new connection
            raise

    def discard(self) -> None:
        """Drop the connection without a word to the broker (it may be the broken part)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.connection.collect()

    def close(self) -> None:
        """Close the connection."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.connection.release()
            except Exception:  # a broken connection may fail to close; it is gone either way
                log.debug("broker connection close failed", exc_info=True)


Send = Callable[[list[T]], None]

LOG_EVERY = 30.0
"""Seconds between log lines while a batch is held."""


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """What one send takes: whatever has arrived, up to ``max_events``; when more than that
    waits already, up to ``max_tasks`` tasks' worth at once (the sender splits them into
    tasks of ``max_events`` and queues them in one round trip). ``max_delay`` > 0 (seconds):
    fixed batches instead, each waiting up to that long after its first event to fill."""

    max_events: int
    max_delay: float
    max_tasks: int = 1


class Handoff(ProducerUnit, Generic[T]):
    """Takes batches from ``buffer`` and hands each to ``send`` (which publishes tasks).

    While the broker is unreachable the batch in hand is kept and retried with backoff; the
    read loop keeps filling the buffer meanwhile (a bounded one drops its oldest). Sending
    resumes by itself when the broker is back. ``droppable`` (market data, at most once): a
    batch that fails with an error no rule calls passing is dropped and counted. Otherwise
    (orders, news) a batch is held on *any* exception, however long: nothing is dropped.
    """

    def __init__(
        self,
        name: str,
        buffer: EventBuffer[T],
        status: StreamStatus,
        send: Send[T],
        policy: BatchPolicy,
        backoff: Backoff | None = None,
        *,
        droppable: bool = True,
    ) -> None:
        self.name = name
        self._buffer = buffer
        self._status = status
        self._send = send
        self._policy = policy
        self._backoff = backoff or Backoff(base=0.25, cap=5.0)
        self._droppable = droppable
        self._failing_since: float | None = None
        self._logged_at = 0.0
        self._stop = threading.Event()
        self._pending: list[T] = []
        status.buffered = lambda: len(self._buffer) + sum(map(weight, self._pending))

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self._pending:
                if not self._buffer.wait(0.2):
                    continue
                self._pending = self._collect()
            if self._try_send():
                failures = 0
            else:
                self._stop.wait(self._backoff.delay(failures))
                failures += 1

    def stop(self) -> None:
        self._stop.set()

    def flush(self, timeout: float) -> None:
        """Send the batch in hand and everything buffered, until done or ``timeout``."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            if not self._pending:
                self._pending = self._buffer.take(self._policy.max_events)
                if not self._pending:
                    log.info("%s flushed", self.name)
                    return
            if not self._try_send():
                pause = min(self._backoff.delay(attempt), deadline - time.monotonic())
                time.sleep(max(0.0, pause))
                attempt += 1
        left = sum(map(weight, self._pending)) + len(self._buffer)
        log.warning("%s: shutdown timeout with %d events unsent", self.name, left)

    def snapshot(self) -> dict[str, Any]:
        return {"buffered": len(self._buffer) + sum(map(weight, self._pending))}

    def _collect(self) -> list[T]:
        """The next batch. Adaptive by default (``max_delay`` 0): what arrived while the last
        send was under way goes out at once, however little, so a lone event never waits on a
        timer and a busy stream's batches grow with the load (the sender never idles while
        events wait; batching what queued during a send, as LMAX's batching or Kafka's sender).
        """
        limit = self._policy.max_events
        batch = self._buffer.take(limit)
        count = sum(map(weight, batch))
        if count >= limit and self._policy.max_tasks > 1:  # a backlog: more tasks at once
            batch += self._buffer.take(limit * (self._policy.max_tasks - 1))
            return batch
        deadline = time.monotonic() + self._policy.max_delay
        while (
            keep_collecting(count, limit, deadline - time.monotonic()) and not self._stop.is_set()
        ):
            if not self._buffer.wait(deadline - time.monotonic()):
                break
            more = self._buffer.take(limit - count)
            batch.extend(more)
            count += sum(map(weight, more))
        return batch

    def _try_send(self) -> bool:
        try:
            self._send(self._pending)
        except Exception as exc:
            retryable = is_retryable(exc)
            if not retryable and self._droppable:
                log.exception(
                    "%s: dropping %d events that cannot be sent", self.name, len(self._pending)
                )
                self._status.dropped += sum(map(weight, self._pending))
                self._pending = []
                return True
            self._note_failure(exc, retryable)
            return False
        if self._failing_since is not None:
            waited = time.monotonic() - self._failing_since
            log.warning("%s: sending again after %.1fs", self.name, waited)
            self._failing_since = None
        self._status.enqueued += sum(map(weight, self._pending))
        self._pending = []
        return True

    def _note_failure(self, exc: Exception, retryable: bool) -> None:
        """Log a held batch: the first failure of a spell, then every LOG_EVERY seconds
        (an unexpected error with its traceback, once a spell)."""
        now = time.monotonic()
        first = self._failing_since is None
        if first:
            self._failing_since = now
        elif now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        held = len(self._pending)
        if retryable:
            log.warning("%s: broker refused the send (%s); holding %d events", self.name, exc, held)
        else:
            log.warning(
                "%s: unexpected error sending (%r); holding %d events and retrying on a new "
                "connection",
                self.name,
                exc,
                held,
                exc_info=first,
            )


def keep_collecting(count: int, limit: int, remaining: float) -> bool:
    """Whether a batch of ``count`` events waits for more before it is sent: only while it is
    short of ``limit`` and its fixed-batch time (``remaining`` seconds) is not over. With the
    adaptive default (no fixed-batch time) never: it goes now."""
    return count < limit and remaining > 0


def to_wire(msg: dict[str, Any], keys: tuple[str, ...] = ("t",)) -> dict[str, Any]:
    """Make a raw message JSON-safe: each msgpack Timestamp of ``keys`` becomes int ns.

    Idempotent: a batch retried after a broker error is converted already.
    """
    for key in keys:
        value = msg.get(key)
        if isinstance(value, msgpack.Timestamp):
            msg[key] = value.to_unix_nano()
    return msg


def split(batch: list[Message], limit: int) -> list[list[Message]]:
    """``batch`` in order, in runs worth up to ``limit`` messages each (a frame heavier than
    ``limit`` is a run of its own: frames are never cut)."""
    runs: list[list[Message]] = []
    run: list[Message] = []
    count = 0
    for m in batch:
        size = weight(m)
        if run and count + size > limit:
            runs.append(run)
            run, count = [], 0
        run.append(m)
        count += size
    if run:
        runs.append(run)
    return runs


def batch_sender(
    app: Celery, task: str, family: str, keys: tuple[str, ...], max_events: int = 1000
) -> Send[Message]:
    """Many messages per task, ``([[received_ns, raw(, source)], ...], family)``: market data.

    An item names its source only when it is not ``stream`` (a backfilled bar). A whole
    :class:`Frame` is one item, ``[received_ns, base64 of its msgpack bytes]``: the workers
    decode it (the task wire is JSON only, and base64 is one C call for the whole frame).
    A batch worth more than ``max_events`` (a backlog) becomes several tasks, queued in one
    round trip.
    """
    sender = TaskSender(app)

    def item(m: Message) -> list[Any]:
        if type(m.payload) is Frame:
            return [m.received_ns, base64.b64encode(m.payload.data).decode("ascii")]
        wire = [m.received_ns, to_wire(m.payload, keys)]
        return wire if m.source == "stream" else [*wire, m.source]

    def task_args(run: list[Message]) -> tuple[list[Any], str]:
        items = [item(m) for m in run]
        events = sum(map(weight, run))
        # Stocks leave the family to the task's default: the wire of the first version.
        args = [items] if family == "us_equity" else [items, family]
        return args, f"[{events} {family} events]"

    def send(batch: list[Message]) -> None:
        sender.send_many(task, [task_args(run) for run in split(batch, max_events)])

    return send


def _describe(payload: Any) -> str:
    """What Flower shows for a one-event task: its event and order id, when it has them."""
    if not isinstance(payload, dict):
        return f"[{type(payload).__name__}]"
    body = payload.get("data", payload)  # a whole trade_updates envelope, or its data
    body = body if isinstance(body, dict) else payload
    order = body.get("order")
    order_id = order.get("id") if isinstance(order, dict) else None
    return f"[{body.get('event', '?')} {order_id or '?'}]"[:120]


def each_sender(app: Celery, task: str, keys: tuple[str, ...]) -> Send[Message]:
    """One task per message, ``(payload, received_ns, source)``, in arrival order; the
    messages of one batch (events that arrived while the last send was under way) go out in
    one round trip."""
    sender = TaskSender(app)

    def send(batch: list[Message]) -> None:
        tasks: list[tuple[list[Any], str | None]] = []
        for m in batch:
            # A frame (news: a market reader) is split here; such streams are slow.
            raws = msgpack.unpackb(m.payload.data) if type(m.payload) is Frame else [m.payload]
            for raw in raws:
                payload = to_wire(raw, keys) if keys else raw
                # A short argsrepr: Celery's own (a safe repr of the whole order) cost more
                # than the rest of the send together.
                tasks.append(([payload, m.received_ns, m.source], _describe(payload)))
        sender.send_many(task, tasks)

    return send
