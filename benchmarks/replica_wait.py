"""Order publication latency with and without the replica wait (``WAIT 1``), on a local
Valkey primary + replica + three Sentinels: ``python -m benchmarks.replica_wait``."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import Settings
from tasks.order_events import prepare_order
from tasks.publisher import Publisher
from tests.harness.sentinel import SentinelCluster

EVENTS, RUNS = 2000, 3


def _event(i: int) -> dict[str, object]:
    order = {"id": f"o-{i}", "symbol": "AAPL", "status": "new", "qty": "1", "filled_qty": "0"}
    return {"event": "new", "timestamp": "2026-01-02T14:30:00.000000001Z", "order": order}


def p99_ms(client_settings: Settings, wait_ms: int, run: int) -> float:
    client = connect(client_settings)
    publisher = Publisher(
        client, Keys(), stream_maxlen=1_000_000, dedupe_ttl=3600, replica_wait_ms=wait_ms
    )
    took = []
    for i in range(EVENTS):
        event = prepare_order(_event(run * 10**6 + wait_ms * 10**4 + i), time.time_ns(), "stream")
        began = time.perf_counter()
        publisher.publish_order(event)
        took.append((time.perf_counter() - began) * 1000)
    return statistics.quantiles(took, n=100)[98]


def main() -> None:
    cluster = SentinelCluster(Path(tempfile.mkdtemp())).start()
    try:
        settings = Settings(_env_file=None, **cluster.env)  # type: ignore[arg-type]
        for run in range(RUNS):
            without = p99_ms(settings, 0, run)
            with_wait = p99_ms(settings, 1000, run)
            print(f"run {run}: order p99 {without:.3f} ms without WAIT, {with_wait:.3f} ms with")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
