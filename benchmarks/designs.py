"""The designs the benchmark compares: the processes each one runs (besides the simulator)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

CELERY = [sys.executable, "-m", "celery", "-A"]
WORKER_FLAGS = ["worker", "--without-gossip", "--without-mingle", "-l", "WARNING"]


@dataclass(frozen=True)
class Design:
    """One way to get prices from the stream into Redis."""

    name: str
    description: str
    producer: list[str]
    workers: dict[str, list[str]] = field(default_factory=dict)
    orders: bool = False  # also carries the order path (and its probe)
    publishes: bool = True  # False: nothing reaches the price channels (ingest measured only)
    stream: str = "prices"  # the producer stream whose counters the bench reads
    env: dict[str, str] = field(default_factory=dict)  # more producer settings
    order_producer: list[str] | None = None
    """A second producer process for the order stream (the first then runs prices only)."""
    producer_nice: int = 0
    """CPU niceness of the (price) producer: positive lets the order path's processes first."""


def pipeline(
    concurrency: int,
    pool: str,
    name: str = "pipeline",
    split: bool = False,
    prefetch: int = 4,
    nice: int = 0,
) -> Design:
    """This project: batched price tasks, solo price workers (or one prefork pool); with no
    price workers (``ingest``), only the producer's hand-off into Celery is measured."""
    price = [*CELERY, "celery_app", *WORKER_FLAGS, "-Q", "prices"]
    price += ["--prefetch-multiplier", str(prefetch)]
    if concurrency == 0:
        workers: dict[str, list[str]] = {}
    elif pool == "solo":
        workers = {
            f"prices{i}": [*price, "-n", f"prices{i}@%h", "-P", "solo"] for i in range(concurrency)
        }
    else:
        workers = {"prices": [*price, "-n", "prices@%h", "-c", str(concurrency)]}
    workers["orders"] = [
        *CELERY,
        "celery_app",
        *WORKER_FLAGS,
        "-Q",
        "orders",
        "-n",
        "orders@%h",
        # One process, no pool child: a task is not passed through a pipe to a child
        # process first. A threads pool (-P threads -c 4) gave a lower order p99 (median 40
        # against 63 ms, five interleaved rounds at 125,000 msgs/s) but lost order events when
        # SIGKILLed (3 runs of 14 of tests/faults/test_worker_kill.py): its consumer keeps
        # taking tasks while others run, and one taken but not yet recorded as unacked dies
        # with it (docs/performance.md).
        "-P",
        "solo",
    ]
    what = "frames per task, workers decode, Lua compare-and-set, one round trip per batch"
    if concurrency == 0:
        what = "the pipeline's producer and order worker, no price worker: ingest into Celery"
    producer = [sys.executable, "-m", "alpaca_broker", "producer"]
    if split:
        what += "; orders in a producer process of their own"
    if nice:
        what += f", the price producer at nice {nice}"
    return Design(
        name,
        f"this project: {what}",
        [*producer, "--streams", "prices"] if split else producer,
        workers,
        orders=True,
        publishes=concurrency > 0,
        order_producer=[*producer, "--streams", "orders"] if split else None,
        producer_nice=nice,
    )


CRYPTO_PAIRS = ("BTC/USD", "ETH/USD", "SOL/USD", "LTC/USD", "DOGE/USD", "AVAX/USD")


def crypto(concurrency: int, pool: str, prefetch: int = 4) -> Design:
    """The pipeline on the crypto stream (trades and quotes of six pairs), prices only."""
    stocks = pipeline(concurrency, pool, prefetch=prefetch)
    workers = {name: argv for name, argv in stocks.workers.items() if name != "orders"}
    return Design(
        "crypto",
        "this project on the crypto stream (CryptoDataStream): trades and quotes of six pairs",
        [*stocks.producer, "--streams", "crypto"],
        workers,
        stream="crypto",
        env={
            "ALPACA_CRYPTO_SYMBOLS": ",".join(CRYPTO_PAIRS),
            "ALPACA_CRYPTO_CHANNELS": "trades,quotes",
        },
    )


def naive(concurrency: int) -> Design:
    """pydantic models, one ``.delay()`` per message, one HSET + PUBLISH per task."""
    worker = [*CELERY, "benchmarks.naive", *WORKER_FLAGS, "-Q", "naive", "-n", "naive@%h"]
    return Design(
        "naive",
        "pydantic models, one .delay() per message in the handler, HSET + PUBLISH per task",
        [sys.executable, "-m", "benchmarks.naive"],
        {"naive": [*worker, "-c", str(concurrency), "--prefetch-multiplier", "16"]},
    )


def direct() -> Design:
    """The producer writes Redis itself: no Celery, the ceiling."""
    return Design(
        "direct",
        "the producer's hand-off writes Redis itself (no Celery): the ceiling",
        [sys.executable, "-m", "benchmarks.direct"],
    )


def ceiling() -> Design:
    """alpaca-py's raw read loop with a counting handler: the limit of any alpaca-py producer."""
    return Design(
        "ceiling",
        "alpaca-py StockDataStream(raw_data=True), a handler that only counts: the read limit",
        [sys.executable, "-m", "benchmarks.ceiling"],
        publishes=False,
    )


def all_designs(concurrency: int, pool: str, prefetch: int = 4) -> dict[str, Design]:
    """Every design by name, in the order the report shows them."""
    designs = (
        ceiling(),
        pipeline(0, pool, "ingest"),
        pipeline(0, pool, "ingest-split", split=True),
        pipeline(0, pool, "ingest-split-nice", split=True, nice=5),
        pipeline(concurrency, pool, prefetch=prefetch),
        naive(max(1, concurrency)),
        direct(),
        crypto(concurrency, pool, prefetch),
    )
    return {d.name: d for d in designs}
