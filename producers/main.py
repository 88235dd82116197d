"""``alpaca-broker producer``: the producer process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from alpaca_broker.errors import ConfigError
from alpaca_broker.heap import freeze_startup_heap
from alpaca_broker.keys import PRICES_QUEUE
from alpaca_broker.logs import setup_logging
from alpaca_broker.recording import RecordingError
from alpaca_broker.settings import exit_on_config_error, load_settings
from producers.handover import on_lease_change
from producers.health import Heartbeat, ProducerView
from producers.lease import Lease
from producers.metrics import MetricsServer
from producers.streams import STREAMS, Stream, build_streams
from producers.supervisor import Supervisor

log = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the interpreter lock while another waits for it (Python's
default: 0.005). While a price read loop keeps the lock busy, every other thread (the
hand-offs, the order stream) waits up to this long after each socket call before it runs
again: at 5 ms the price hand-off fell behind the read loop and dropped messages, and each
order event waited several such turns. Measured in docs/performance.md."""


def parse_streams(value: str) -> tuple[str, ...]:
    """``"prices,orders"`` -> ``("prices", "orders")``; ConfigError naming an unknown one."""
    names = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [n for n in names if n not in STREAMS]
    if unknown or not names:
        choices = ", ".join(STREAMS) or "none"
        raise ConfigError(
            "--streams", f"unknown stream {unknown or value!r} (choose from {choices})"
        )
    return names


def producer_view(
    name: str, running: list[Stream], supervisor: Supervisor, lease: Lease | None
) -> ProducerView:
    """What the heartbeat and metrics show: streams, threads, reconciliation, lease role."""

    def extra() -> dict[str, object]:
        doc: dict[str, object] = {}
        stats = [s.reconciliation for s in running if s.reconciliation is not None]
        if stats:
            doc["reconciliation"] = stats[0].snapshot()
        if lease is not None:
            doc.update(role=lease.role, lease=lease.lease, epoch=lease.epoch)
        return doc

    return ProducerView(name, {s.kind.name: s.status for s in running}, supervisor.states, extra)


def run_until_signalled(supervisor: Supervisor) -> int:
    """Run ``supervisor`` until SIGTERM or Ctrl-C; returns its exit code."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if supervisor.stopping:
            log.warning("already stopping (signal %d)", signum)
            return
        log.info("received %s, stopping", signal.Signals(signum).name)
        supervisor.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker producer``."""
    parser = argparse.ArgumentParser(
        prog="alpaca-broker producer",
        description="Hold Alpaca's streams and hand every message to Celery.",
    )
    parser.add_argument(
        "--streams",
        default="prices,orders",
        help=f"comma-separated streams to run, any of {','.join(STREAMS)}",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        settings.credentials()
        streams = parse_streams(args.streams)
        for name in streams:
            STREAMS[name].check(settings)
    except ConfigError as exc:
        exit_on_config_error(exc)
    setup_logging(
        "producer",
        fmt=settings.log_format,
        level=settings.log_level,
        secrets=settings.secret_values(),
    )
    log.info("starting producer %r with streams %s", settings.producer_name, ",".join(streams))
    from celery_app import create_app  # the producer's Celery client, from its settings

    app = create_app(settings)
    # Prices on a broker of their own when CELERY_PRICES_BROKER_URL says so (docs/scaling.md).
    prices_app = create_app(settings, PRICES_QUEUE) if settings.prices_broker_apart else app
    try:
        running = build_streams(settings, streams, app, prices_app)
    except RecordingError as exc:  # ALPACA_RECORD_FILE cannot be written (or is a symlink)
        exit_on_config_error(ConfigError("ALPACA_RECORD_FILE", str(exc)))
    leased = settings.producer_lease is not None
    supervisor = Supervisor(
        {name: unit for s in running for name, unit in s.units.items()},
        shutdown_timeout=settings.shutdown_timeout,
        gated=[name for s in running for name in s.gated] if leased else (),
    )
    lease = None
    if settings.producer_lease is not None:
        # A deposed holder says when its sockets are closed (producers.handover).
        statuses = [s.status for s in running]
        lease_name = settings.producer_lease
        changed = on_lease_change(supervisor.set_active, settings, lease_name, statuses)
        lease = Lease(settings, changed)
    view = producer_view(settings.producer_name, running, supervisor, lease)
    supervisor.add("heartbeat", lambda: Heartbeat(settings, view))
    if settings.metrics_port is not None:
        supervisor.add("metrics", lambda: MetricsServer(settings, view))
    if lease is not None:
        # Added last, so flushed last: the lease is released after the streams stopped and
        # their buffers were sent. One instance across restarts: it holds the token.
        supervisor.add("lease", lambda: lease)
    sys.setswitchinterval(SWITCH_INTERVAL)
    freeze_startup_heap()  # everything imported and built: out of the collector's way
    code = run_until_signalled(supervisor)
    log.info("producer exiting with code %d", code)
    return code
