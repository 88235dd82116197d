"""The producer's metrics: the health key's counters in Prometheus text format, over HTTP.

Off unless ``METRICS_PORT`` is set. :func:`render` is pure over the producer's view (the
same document the heartbeat writes, :func:`producers.health.health_document`);
:class:`MetricsServer` is a supervised unit serving it at ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from socketserver import TCPServer
from typing import Any, get_args

from alpaca_broker.settings import Settings
from producers.health import ProducerView, StreamState, health_document
from producers.supervisor import ProducerUnit

log = logging.getLogger(__name__)

PREFIX = "alpaca_broker_producer"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STREAM_STATES: tuple[StreamState, ...] = get_args(StreamState)
# (health key field, metric suffix, help) of each per-stream counter.
COUNTERS = (
    ("received", "received_total", "Messages received from Alpaca."),
    ("enqueued", "enqueued_total", "Messages handed to Celery."),
    ("dropped", "dropped_total", "Messages dropped (buffer full or unsendable)."),
    ("reconnects", "reconnects_total", "Reconnections after a lost connection."),
    ("malformed", "malformed_total", "Frames or messages that could not be decoded."),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value or 0))


def _family(
    name: str, kind: str, text: str, samples: Iterable[tuple[dict[str, str], Any]]
) -> list[str]:
    lines = [f"# HELP {PREFIX}_{name} {text}", f"# TYPE {PREFIX}_{name} {kind}"]
    lines += [f"{PREFIX}_{name}{_labels(**labels)} {_number(v)}" for labels, v in samples]
    return lines


def render(view: ProducerView) -> str:
    """The Prometheus text exposition of one producer's streams and threads (pure)."""
    producer = view.name
    doc = health_document(view, "running")
    streams: dict[str, dict[str, Any]] = doc["streams"]
    threads: dict[str, dict[str, Any]] = doc["threads"]

    def per_stream(field: str) -> list[tuple[dict[str, str], Any]]:
        return [({"producer": producer, "stream": s}, v.get(field)) for s, v in streams.items()]

    lines: list[str] = []
    for field, suffix, text in COUNTERS:
        lines += _family(f"stream_{suffix}", "counter", text, per_stream(field))
    connected = [
        ({"producer": producer, "stream": s}, int(v.get("state") == "connected"))
        for s, v in streams.items()
    ]
    lines += _family("stream_connected", "gauge", "1 while the stream is connected.", connected)
    state = [
        ({"producer": producer, "stream": s, "state": name}, int(v.get("state") == name))
        for s, v in streams.items()
        for name in STREAM_STATES
    ]
    lines += _family("stream_state", "gauge", "1 for the stream's current state.", state)
    lines += _family(
        "stream_buffered", "gauge", "Messages held, not yet sent.", per_stream("buffered")
    )
    last = [(labels, v) for labels, v in per_stream("last_message_at") if v is not None]
    lines += _family(
        "stream_last_message_timestamp_seconds",
        "gauge",
        "Unix time of the last message received.",
        [(labels, float(v)) for labels, v in last],
    )
    restarts = [({"producer": producer, "thread": t}, v["restarts"]) for t, v in threads.items()]
    lines += _family(
        "thread_restarts_total", "counter", "Restarts of a supervised thread.", restarts
    )
    running = [
        ({"producer": producer, "thread": t}, int(v["thread"] == "running"))
        for t, v in threads.items()
    ]
    lines += _family("thread_up", "gauge", "1 while the supervised thread runs.", running)
    lines += _reconciliation(producer, doc.get("reconciliation"))
    if "role" in doc:
        roles = [
            ({"producer": producer, "lease": str(doc["lease"]), "role": r}, int(doc["role"] == r))
            for r in ("active", "standby")
        ]
        lines += _family("role", "gauge", "1 for this producer's role in its lease.", roles)
    return "\n".join(lines) + "\n"


# (reconciliation field, metric, kind, help) of the order reconciler's counters.
RECONCILIATION = (
    ("runs", "reconciliation_runs_total", "counter", "Complete reconciliation passes."),
    ("recovered", "reconciliation_recovered_total", "counter", "Missed order updates found."),
    ("failures", "reconciliation_failures_total", "counter", "Failed or incomplete passes."),
    ("skipped", "reconciliation_skipped_total", "counter", "Orders skipped as malformed/gone."),
    (
        "last_success_at",
        "reconciliation_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last complete pass.",
    ),
)


def _reconciliation(producer: str, stats: dict[str, Any] | None) -> list[str]:
    if stats is None:
        return []
    lines: list[str] = []
    for field, name, kind, text in RECONCILIATION:
        value = stats.get(field)
        samples = [] if value is None else [({"producer": producer}, value)]
        lines += _family(name, kind, text, samples)
    return lines


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsHTTPServer
    timeout = 5  # a stalled client cannot hold the (single) serving thread for long

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "try /metrics")
            return
        body = render(self.server.view).encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # http.server writes every request to stderr; one debug line instead.
        log.debug("metrics request %r from %s", self.requestline, self.client_address[0])


class _MetricsHTTPServer(TCPServer):
    # TCPServer rather than HTTPServer: the latter resolves its host's FQDN at bind time.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], view: ProducerView) -> None:
        super().__init__(address, _Handler)
        self.view = view


class MetricsServer(ProducerUnit):
    """Serves ``/metrics`` on ``METRICS_HOST:METRICS_PORT`` until stopped."""

    name = "metrics"

    def __init__(self, settings: Settings, view: ProducerView, poll: float = 0.25) -> None:
        assert settings.metrics_port is not None
        self._server = _MetricsHTTPServer((settings.metrics_host, settings.metrics_port), view)
        self._server.timeout = poll  # handle_request() returns this often to see stop()
        self._stop = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the port is chosen when ``METRICS_PORT=0``)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def run(self) -> None:
        host, port = self.address
        log.info("metrics on http://%s:%d/metrics", host, port)
        try:
            while not self._stop.is_set():
                self._server.handle_request()
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._stop.set()

    def flush(self, timeout: float) -> None:
        self._server.server_close()  # when run() never started
