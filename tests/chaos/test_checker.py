"""The checker on small hand-made histories: each rule passes a clean run and fails its
violation, and the recorders' parsers read what Redis and the producer write."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from alpaca_broker.recording import RecordingWriter
from simulator.orders import new_order, trade_update
from tests.chaos.checker import check
from tests.chaos.history import monitor_arguments, read_received, task_event
from tests.chaos.model import EventKey, History, Observation, key_of_update

NEW: EventKey = ("o1", "new", "100")
FILL: EventKey = ("o1", "fill", "x1")


def published(key: EventKey, status: str, source: str = "stream") -> dict[str, Any]:
    """An ``order_update`` event as the workers publish it, reduced to what the checker reads."""
    order_id, event, distinct = key
    execution_id = None if distinct.isdigit() else distinct
    ts_ns = int(distinct) if execution_id is None else 200
    return {"order_id": order_id, "event": event, "execution_id": execution_id,
            "ts_ns": ts_ns, "status": status, "source": source}  # fmt: skip


def clean() -> History:
    """One order, new then filled: delivered to run a#1, queued, published once, converged."""
    return History(
        emitted=[NEW, FILL],
        rest={"o1": ("filled", "10")},
        received={"a#1": {NEW, FILL}},
        queued={NEW: ["t1"], FILL: ["t2"]},
        published=[published(NEW, "new"), published(FILL, "filled")],
        channel=[NEW, FILL],
        observations=[
            Observation(1.0, "o1", None, None, None),
            Observation(2.0, "o1", 100, "new", "0"),
            Observation(3.0, "o1", 200, "filled", "10"),
        ],
        hashes={"o1": ("filled", "10")},
        last_change=10.0,
        converged_at=12.0,
    )


def violations(history: History) -> list[str]:
    return check(history).violations


def test_a_clean_history_passes_every_rule() -> None:
    verdict = check(clean())
    assert verdict.ok, verdict.violations
    assert verdict.counts["required"] == 2
    assert verdict.counts["exempt"] == 0


def test_an_event_twice_in_the_stream_or_on_the_channel_is_a_violation() -> None:
    history = clean()
    history.published.append(published(FILL, "filled", "stream"))
    history.channel.append(NEW)
    found = violations(history)
    assert any(v.startswith("exactly once") and "P:orders:events" in v for v in found)
    assert any(v.startswith("exactly once") and "in P:orders:" in v for v in found)


def test_an_event_read_by_a_producer_that_lived_on_and_never_published_is_lost() -> None:
    history = clean()
    history.queued = {}
    history.published = [published(NEW, "new"), published(("o1", "fill", "300"), "filled")]
    found = violations(history)
    assert any("read by a producer run that was never SIGKILLed" in v and "x1" in v for v in found)


def test_an_event_read_only_by_a_sigkilled_producer_and_never_queued_is_exempt() -> None:
    history = clean()
    history.killed = {"a#1"}
    history.queued = {NEW: ["t1"]}
    # Reconciliation recovered the order's state: a stand-in, no execution id.
    history.published = [published(NEW, "new"), published(("o1", "fill", "300"), "filled", "x")]
    verdict = check(history)
    assert verdict.ok, verdict.violations
    assert verdict.counts["exempt"] == 1


def test_an_event_that_reached_the_queue_is_required_even_from_a_sigkilled_producer() -> None:
    history = clean()
    history.killed = {"a#1"}
    history.published = [published(NEW, "new"), published(("o1", "fill", "300"), "filled", "x")]
    found = violations(history)
    assert any("reached the orders queue" in v and "['t2']" in v for v in found)


def test_a_queued_event_missing_from_every_recording_is_still_required() -> None:
    history = clean()
    history.received = {"a#1": {NEW}}  # the SIGKILLed run's recording lost its tail
    history.killed = {"a#1"}
    history.published = [published(NEW, "new"), published(("o1", "fill", "300"), "filled", "x")]
    assert any("reached the orders queue" in v for v in violations(history))


def test_an_event_read_by_a_killed_and_a_living_producer_is_required() -> None:
    history = clean()
    history.received = {"a#1": {NEW, FILL}, "b#2": {FILL}}
    history.killed = {"a#1"}
    history.queued = {NEW: ["t1"]}
    history.published = [published(NEW, "new"), published(("o1", "fill", "300"), "filled", "x")]
    assert any("read by ['a#1', 'b#2']" in v for v in violations(history))


def test_a_stand_in_with_the_same_identity_counts_as_the_streamed_event() -> None:
    history = clean()
    canceled: EventKey = ("o1", "canceled", "150")
    history.emitted = [NEW, canceled]
    history.received = {"a#1": {NEW, canceled}}
    history.queued = {NEW: ["t1"], canceled: ["t2"]}
    history.published = [published(NEW, "new"), published(canceled, "canceled", "x")]
    history.rest = {"o1": ("canceled", "0")}
    history.hashes = {"o1": ("canceled", "0")}
    history.observations = [Observation(1.0, "o1", 150, "canceled", "0")]
    history.channel = [NEW, canceled]
    assert check(history).ok


def test_a_hash_that_differs_from_rest_or_converged_late_or_never_is_a_violation() -> None:
    history = clean()
    history.hashes = {"o1": ("new", "0")}
    found = violations(history)
    assert any("differ from REST" in v for v in found)

    history = clean()
    history.converged_at = None
    assert any("never all equalled REST" in v for v in violations(history))

    history = clean()
    history.converged_at = history.last_change + 181
    assert any("took 181.0 s" in v for v in violations(history))


def test_an_order_without_an_event_leading_to_its_rest_status_is_a_violation() -> None:
    history = clean()
    history.rest = {"o1": ("canceled", "10")}
    history.hashes = {"o1": ("canceled", "10")}
    assert any("no event leading to their REST status" in v for v in violations(history))


def test_each_kind_of_hash_regression_is_a_violation() -> None:
    cases = {
        "ts 200 -> 100": Observation(4.0, "o1", 100, "new", "0"),
        "filled_qty 10 -> 5": Observation(4.0, "o1", 300, "partially_filled", "5"),
        "final filled -> canceled": Observation(4.0, "o1", 300, "canceled", "10"),
        "vanished": Observation(4.0, "o1", None, None, None),
    }
    for expected, observation in cases.items():
        history = clean()
        history.observations.append(observation)
        found = violations(history)
        assert any(v.startswith("regression") and expected in v for v in found), (expected, found)


def test_entries_in_the_dead_letter_stream_are_a_violation() -> None:
    history = clean()
    history.dead_letters = [{"reason": "validation failed", "task": "orders.publish_event"}]
    assert any("dead letters" in v and "validation failed" in v for v in violations(history))


def test_a_published_event_the_simulator_never_emitted_is_a_phantom() -> None:
    history = clean()
    history.published.append(published(("o1", "fill", "x9"), "filled"))
    history.published.append(published(("o2", "fill", "400"), "filled", "reconciliation"))
    found = violations(history)
    assert any(v.startswith("phantoms: 2") for v in found)


def test_a_run_that_delivered_or_published_nothing_fails_as_vacuous() -> None:
    history = History(rest={"o1": ("new", "0")}, converged_at=0.0)
    assert any(v.startswith("vacuous") for v in violations(history))


# --- the recorders' parsers ---------------------------------------------------------------


def test_a_monitor_line_is_unquoted_as_redis_quoted_it() -> None:
    line = b'1796682296.777024 [0 127.0.0.1:47616] "LPUSH" "orders" "{\\"a\\":\\"b\\\\n\\"}\\x01"'
    assert monitor_arguments(line) == [b"LPUSH", b"orders", b'{"a":"b\\n"}\x01']
    assert monitor_arguments(b'1.0 [0 lua] "SET" "k" "two words"') == [b"SET", b"k", b"two words"]
    assert monitor_arguments(b"OK") == []


def _task_message(data: dict[str, Any], source: str, task: str = "orders.publish_event") -> bytes:
    body = base64.b64encode(json.dumps([[data, 1, source], {}, {}]).encode()).decode()
    properties = {"delivery_tag": "tag-1"}
    message = {"body": body, "headers": {"task": task, "id": "tid-1"}, "properties": properties}
    return json.dumps(message).encode()


def test_a_task_message_names_the_order_event_it_carries() -> None:
    order = new_order(symbol="AAPL", ts_ns=1_000)
    data = trade_update("fill", order, 2_000, execution_id="e1", price="1", qty="1")["data"]
    expected = (key_of_update(data), "stream", "tid-1", "tag-1")
    assert task_event(_task_message(data, "stream")) == expected
    assert task_event(_task_message(data, "stream", task="prices.publish_batch")) is None
    assert task_event(b"not json") is None


def test_a_producer_recording_yields_the_trade_updates_it_read(tmp_path: Path) -> None:
    order = new_order(symbol="AAPL", ts_ns=1_000)
    update = trade_update("new", order, 1_500)
    path = tmp_path / "run.jsonl"
    with RecordingWriter(path) as writer:
        writer.write("trading", json.dumps(update).encode(), 1)
        writer.write("trading", json.dumps({"stream": "listening", "data": {}}), 2)
    with path.open("a") as cut_short:
        cut_short.write('{"ns": 3, "stream": "trad')  # a SIGKILL in the middle of a line
    assert read_received(path) == {key_of_update(update["data"])}
    assert read_received(tmp_path / "missing.jsonl") == set()
