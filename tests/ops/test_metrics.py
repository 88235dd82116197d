"""The producer's Prometheus endpoint (``METRICS_PORT``): the health key's counters and gauges,
per stream, in the text exposition format."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from alpaca_broker.settings import Settings
from producers.health import ProducerView, StreamStatus
from producers.metrics import CONTENT_TYPE, render
from tests.harness.stack import OpsStack
from tests.harness.wait import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
P = "alpaca_broker_producer_"


def parse(text: str) -> Samples:
    """Every sample by (name, sorted labels); parsing fails on malformed exposition text."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(stack: OpsStack, path: str = "/metrics") -> requests.Response:
    return requests.get(f"http://127.0.0.1:{stack.metrics_port}{path}", timeout=5)


@pytest.mark.slow
def test_producer_serves_prometheus_counters_and_gauges_of_each_stream(stack: OpsStack) -> None:
    first = scrape(stack)
    assert first.status_code == 200
    assert first.headers["Content-Type"] == CONTENT_TYPE
    samples = parse(first.text)
    who = {"producer": stack.producer_name}

    for stream in ("prices", "orders"):
        labels = {**who, "stream": stream}
        for counter in ("received", "enqueued", "dropped", "reconnects", "malformed"):
            assert sample(samples, f"{P}stream_{counter}_total", **labels) >= 0
        assert sample(samples, f"{P}stream_connected", **labels) == 1
        assert sample(samples, f"{P}stream_state", state="connected", **labels) == 1
        assert sample(samples, f"{P}stream_state", state="auth_failed", **labels) == 0
        assert sample(samples, f"{P}stream_buffered", **labels) >= 0
    for thread in ("prices", "orders", "heartbeat", "metrics"):
        assert sample(samples, f"{P}thread_restarts_total", thread=thread, **who) == 0
        assert sample(samples, f"{P}thread_up", thread=thread, **who) == 1

    # The counters are the live ones: the simulated market keeps them moving, and the
    # heartbeat (written every 0.5 s) agrees with them.
    prices = {**who, "stream": "prices"}
    received = sample(samples, f"{P}stream_received_total", **prices)
    assert received > 0
    assert sample(samples, f"{P}stream_last_message_timestamp_seconds", **prices) > 0

    def moved() -> float | None:
        later = sample(parse(scrape(stack).text), f"{P}stream_received_total", **prices)
        return later if later > received else None

    later = wait_until(moved, 10, interval=0.1, message="received_total grows")
    beat = wait_until(
        lambda: (d := stack.heartbeat()) and d["streams"]["prices"]["received"] >= later and d,
        5,
        message="the heartbeat catches up",
    )
    assert beat["streams"]["prices"]["enqueued"] > 0

    assert scrape(stack, "/").status_code == 404


def test_metrics_are_off_unless_metrics_port_is_set() -> None:
    settings = Settings(_env_file=None)
    assert settings.metrics_port is None
    assert settings.metrics_host == "127.0.0.1"


# --- rendering (pure) ------------------------------------------------------------------------


def _view(producer: str = "p1", **prices: Any) -> ProducerView:
    thread = {"thread": "running", "restarts": 0, "last_error": None}
    fields = {
        "state": "connected",
        "since": 1.0,
        "last_message_at": 1_700_000_000.25,
        "received": 10,
        "enqueued": 8,
        "dropped": 1,
        "reconnects": 2,
        "malformed": 1,
        **prices,
    }
    status = StreamStatus("prices", **fields, buffered=lambda: 1)
    threads = {
        "prices": thread,
        "prices.handoff": {**thread, "restarts": 3},
        "heartbeat": {**thread, "thread": "backoff"},
    }
    return ProducerView(producer, {"prices": status}, lambda: threads)


def test_render_gives_each_counter_and_gauge_per_stream_and_thread() -> None:
    samples = parse(render(_view()))
    labels = {"producer": "p1", "stream": "prices"}

    assert sample(samples, f"{P}stream_received_total", **labels) == 10
    assert sample(samples, f"{P}stream_enqueued_total", **labels) == 8
    assert sample(samples, f"{P}stream_dropped_total", **labels) == 1
    assert sample(samples, f"{P}stream_reconnects_total", **labels) == 2
    assert sample(samples, f"{P}stream_malformed_total", **labels) == 1
    assert sample(samples, f"{P}stream_connected", **labels) == 1
    assert sample(samples, f"{P}stream_buffered", **labels) == 1
    assert sample(samples, f"{P}stream_last_message_timestamp_seconds", **labels) == (
        1_700_000_000.25
    )
    assert sample(samples, f"{P}thread_restarts_total", producer="p1", thread="prices.handoff") == 3
    assert sample(samples, f"{P}thread_up", producer="p1", thread="heartbeat") == 0


def test_render_of_a_rejected_stream_without_messages() -> None:
    samples = parse(render(_view(state="auth_failed", last_message_at=None)))
    labels = {"producer": "p1", "stream": "prices"}

    assert sample(samples, f"{P}stream_connected", **labels) == 0
    assert sample(samples, f"{P}stream_state", state="auth_failed", **labels) == 1
    assert not any(name.endswith("last_message_timestamp_seconds") for name, _ in samples)


def test_render_escapes_label_values() -> None:
    text = render(_view('we"ird\\name'))
    assert 'producer="we\\"ird\\\\name"' in text
    assert parse(text)
