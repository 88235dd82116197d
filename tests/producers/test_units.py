"""Pure pieces of the producer: failure classes, wire conversion, buffer, hand-off, reconcile."""

from __future__ import annotations

import threading

import kombu.exceptions
import msgpack
import pytest
import websockets.exceptions

from producers.buffer import EventBuffer, Message
from producers.connection import classify
from producers.frames import Frame
from producers.handoff import BatchPolicy, Handoff, keep_collecting, split, to_wire
from producers.health import StreamStatus
from producers.order_diff import missed_event
from tests.harness.wait import wait_until


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("auth failed"), "rejected"),
        (ValueError("insufficient subscription"), "rejected"),
        (ValueError("failed to authenticate"), "rejected"),
        (ValueError("connection limit exceeded"), "connection_limit"),
        (ValueError("connected message not received"), "retry"),
        (OSError("connection refused"), "retry"),
        (
            websockets.exceptions.InvalidHandshake(
                "server rejected WebSocket connection: HTTP 429"
            ),
            "retry",
        ),
    ],
)
def test_connect_failures_are_classified(exc: BaseException, expected: str) -> None:
    assert classify(exc) == expected


def test_to_wire_turns_msgpack_timestamp_into_exact_nanoseconds() -> None:
    raw = msgpack.unpackb(msgpack.packb({"T": "t", "t": msgpack.Timestamp(1764000000, 123456789)}))
    assert to_wire(raw)["t"] == 1764000000123456789
    assert to_wire(raw)["t"] == 1764000000123456789  # idempotent: a retried batch is unchanged


def test_bounded_buffer_drops_the_oldest_and_counts_them() -> None:
    status = StreamStatus("prices")
    buffer: EventBuffer[int] = EventBuffer(status, maxlen=3)
    for i in range(5):
        buffer.put(i)
    assert buffer.take(10) == [2, 3, 4]
    assert status.dropped == 2


def test_unbounded_buffer_never_drops() -> None:
    status = StreamStatus("orders")
    buffer: EventBuffer[int] = EventBuffer(status, maxlen=None, warn_at=10)
    for i in range(100):
        buffer.put(i)
    assert buffer.take(1000) == list(range(100))
    assert status.dropped == 0


def test_handoff_holds_the_batch_while_the_broker_is_down_and_keeps_order() -> None:
    status = StreamStatus("orders")
    buffer: EventBuffer[int] = EventBuffer(status, maxlen=None)
    sent: list[int] = []
    broker_up = threading.Event()

    def send(batch: list[int]) -> None:
        if not broker_up.is_set():
            raise kombu.exceptions.OperationalError("Error 111 connecting")
        sent.extend(batch)

    from producers.supervisor import Backoff

    handoff = Handoff(
        "orders.handoff", buffer, status, send, BatchPolicy(1, 0), Backoff(0.01, 0.05)
    )
    thread = threading.Thread(target=handoff.run, daemon=True)
    thread.start()
    for i in range(20):
        buffer.put(i)
    wait_until(lambda: handoff.snapshot()["buffered"] == 20, 5)
    broker_up.set()
    wait_until(lambda: sent == list(range(20)), 5)
    assert status.enqueued == 20
    handoff.stop()
    thread.join(2)


def test_handoff_batches_by_size_and_flushes_the_rest_on_stop() -> None:
    status = StreamStatus("prices")
    buffer: EventBuffer[int] = EventBuffer(status, maxlen=1000)
    batches: list[list[int]] = []
    handoff = Handoff("prices.handoff", buffer, status, batches.append, BatchPolicy(10, 0.05))
    for i in range(25):
        buffer.put(i)
    thread = threading.Thread(target=handoff.run, daemon=True)
    thread.start()
    wait_until(lambda: sum(map(len, batches)) == 25, 5)
    assert [len(b) for b in batches][:2] == [10, 10]
    handoff.stop()
    thread.join(2)
    buffer.put(99)
    handoff.flush(1.0)
    assert batches[-1] == [99]


def test_handoff_takes_a_waiting_backlog_as_several_tasks_without_lingering() -> None:
    status = StreamStatus("prices")
    buffer: EventBuffer[int] = EventBuffer(status, maxlen=1000)
    batches: list[list[int]] = []
    # A linger of a minute: a batch sent at once shows the backlog skipped it.
    policy = BatchPolicy(10, 60.0, max_tasks=3)
    handoff = Handoff("prices.handoff", buffer, status, batches.append, policy)
    for i in range(35):
        buffer.put(i)
    thread = threading.Thread(target=handoff.run, daemon=True)
    thread.start()
    wait_until(lambda: len(batches) >= 1, 5)
    assert batches[0] == list(range(30))
    handoff.stop()
    thread.join(2)


@pytest.mark.parametrize(
    ("count", "remaining", "wait"),
    [
        (1, 0.0, False),  # idle, adaptive: a lone event goes at once
        (40, 0.0, False),  # moderate: what queued during the last send goes at once
        (1000, 0.0, False),  # saturating: a full batch goes
        (1000, 0.02, False),  # a full fixed batch goes before its time is up
        (40, 0.02, True),  # PRICE_BATCH_MS set: a short fixed batch waits for more
        (40, -0.001, False),  # ... until its time is up
    ],
)
def test_a_batch_waits_for_more_only_when_fixed_batches_were_asked_for(count, remaining, wait):
    assert keep_collecting(count, 1000, remaining) is wait


def _adaptive_handoff(limit: int = 1000, max_tasks: int = 8):
    """A running price hand-off with the default (adaptive) policy, whose sends block until
    the test releases them: ``(buffer, batches, release, stop)``."""
    status = StreamStatus("prices")
    buffer: EventBuffer[int] = EventBuffer(status, maxlen=100_000)
    batches: list[list[int]] = []
    release = threading.Semaphore(0)

    def send(batch: list[int]) -> None:
        batches.append(list(batch))
        release.acquire()  # the send is "under way" until the test lets it finish

    handoff = Handoff("prices.handoff", buffer, status, send, BatchPolicy(limit, 0, max_tasks))
    thread = threading.Thread(target=handoff.run, daemon=True)
    thread.start()

    def stop() -> None:
        handoff.stop()
        for _ in range(10):
            release.release()
        thread.join(2)

    return buffer, batches, release, stop


def test_adaptive_handoff_sends_a_lone_event_at_once_and_batches_what_arrives_meanwhile():
    buffer, batches, release, stop = _adaptive_handoff()
    try:
        buffer.put(0)  # idle: nothing in flight, it goes alone, with no timer to wait out
        wait_until(lambda: batches == [[0]], 5)
        for i in range(1, 41):  # a moderate rate: these arrive while that send is under way
            buffer.put(i)
        release.release()
        wait_until(lambda: len(batches) == 2, 5)
        assert batches[1] == list(range(1, 41))
        release.release()
    finally:
        stop()


def test_adaptive_handoff_under_saturation_sends_full_tasks_several_at_a_time():
    buffer, batches, release, stop = _adaptive_handoff(limit=10, max_tasks=3)
    try:
        buffer.put(0)
        wait_until(lambda: len(batches) == 1, 5)
        for i in range(1, 101):  # a backlog builds while the first send is under way
            buffer.put(i)
        release.release()
        wait_until(lambda: len(batches) == 2, 5)
        assert batches[1] == list(range(1, 31))  # three tasks' worth in one send
    finally:
        stop()


def test_split_cuts_a_backlog_into_tasks_within_the_limit_and_never_cuts_a_frame() -> None:
    def frame(n: int) -> Message:
        return Message(1, Frame(b"", n))

    batch = [frame(300), frame(300), frame(100), frame(700), frame(50)]
    runs = split(batch, 500)
    assert [[m.payload.messages for m in run] for run in runs] == [[300], [300, 100], [700], [50]]
    assert [m for run in runs for m in run] == batch


ORDER = {
    "id": "o-1",
    "status": "filled",
    "filled_qty": "10",
    "updated_at": "2026-11-24T15:00:00.1Z",
}


def test_reconcile_finds_a_fill_missed_during_the_gap() -> None:
    event = missed_event(ORDER, {"status": "new", "filled_qty": "0"})
    assert event == {"event": "fill", "order": ORDER, "timestamp": ORDER["updated_at"]}


def test_reconcile_emits_nothing_when_redis_already_has_the_state() -> None:
    assert missed_event(ORDER, {"status": "filled", "filled_qty": "10.0"}) is None


def test_reconcile_reports_an_order_redis_never_saw() -> None:
    new = {**ORDER, "status": "new", "filled_qty": "0"}
    assert missed_event(new, {})["event"] == "new"  # type: ignore[index]


def test_reconcile_sees_a_partial_fill_with_unchanged_status() -> None:
    partial = {**ORDER, "status": "partially_filled", "filled_qty": "7"}
    event = missed_event(partial, {"status": "partially_filled", "filled_qty": "3"})
    assert event is not None
    assert event["event"] == "partial_fill"
