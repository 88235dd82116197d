"""The system under test of one chaos run, as real processes.

One Redis (AOF, ``appendfsync always``) or a Sentinel set (primary, replica, three Sentinels)
as broker and output; two order workers; two producers of the ``orders`` stream sharing one
``PRODUCER_LEASE``, each run (and each restart) recording every frame it reads
(``ALPACA_RECORD_FILE``: the history of what the stream delivered to whom); the simulator in
this process, its REST API behind a proxy the nemesis can make fail or slow down.

Settings lowered for the run (production keeps the defaults; the same recovery, later):
``RECONCILE_INTERVAL`` 5 s (60), ``CELERY_VISIBILITY_TIMEOUT`` 5 s (20), ``LEASE_TTL`` 3 s (5).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from alpaca_broker.keys import ORDERS_QUEUE, Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.redis_server import Flavor, RedisServer
from alpaca_broker.settings import Settings
from simulator.api import Simulator
from tests.harness.producer import ProducerProcess
from tests.harness.rest_proxy import RestProxy
from tests.harness.sentinel import SentinelCluster
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

log = logging.getLogger(__name__)
KEYS = Keys()
LEASE = "chaos"
PRODUCER_NAMES = ("a", "b")
WORKER_NAMES = ("worker-0", "worker-1")
WORKER_ENV = {"CELERY_VISIBILITY_TIMEOUT": "5"}
PRODUCER_ENV = {
    "PRODUCER_LEASE": LEASE,
    "LEASE_TTL": "3",
    "RECONCILE_INTERVAL": "5",
    "BAR_BACKFILL_MINUTES": "0",
}


@dataclass
class Instance:
    """One producer process: its name, its run number and the file of what it read."""

    name: str
    run: int
    record: Path
    process: ProducerProcess
    killed: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}#{self.run}"


class ChaosStack:
    """Starts, reaches and stops everything one run needs, in ``directory``."""

    def __init__(self, directory: Path, topology: str, flavor: Flavor, sim: Simulator) -> None:
        self.directory = directory
        self.topology = topology
        self.flavor = flavor
        self.sim = sim
        self.server: RedisServer | None = None
        self.cluster: SentinelCluster | None = None
        self.rest = RestProxy(sim.rest_url)
        self.workers: dict[str, WorkerProcess] = {}
        self.instances: list[Instance] = []
        self._runs = 0
        self._lock = threading.Lock()
        self.holder_seen: str | None = None
        self._lease_client: redis.Redis | None = None

    # --- addresses -------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Where a project process finds Redis."""
        if self.cluster is not None:
            return dict(self.cluster.env)
        assert self.server is not None
        return {"REDIS_URL": self.server.url}

    @property
    def url(self) -> str:
        return self.env["REDIS_URL"]

    def client(self, **options: object) -> redis.Redis:
        """A client of the current primary (through Sentinel when there are Sentinels)."""
        settings = Settings(_env_file=None, **self.env)  # type: ignore[arg-type]
        merged: dict[str, object] = {"decode_responses": True, "socket_timeout": 2}
        merged.update(options)
        return connect(settings, **merged)

    def data_ports(self) -> list[int]:
        """Every data node's port (the primary and, behind Sentinel, the replica)."""
        if self.cluster is not None:
            return list(self.cluster.nodes)
        assert self.server is not None
        return [self.server.port]

    def primary_client(self) -> redis.Redis:
        """A client of the node that is primary now (no Sentinel in between: CONFIG SET)."""
        port = self.cluster.primary_port if self.cluster is not None else self.data_ports()[0]
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)

    # --- start and stop --------------------------------------------------------------------

    def start(self) -> None:
        if self.topology == "sentinel":
            self.cluster = SentinelCluster(self.directory / "sentinel", flavor=self.flavor).start()
        else:
            self.server = RedisServer(self.directory / "redis", flavor=self.flavor)
            self.server.start()
        starters = [
            threading.Thread(target=self.start_worker, args=(name,)) for name in WORKER_NAMES
        ]
        for thread in starters:
            thread.start()
        for name in PRODUCER_NAMES:
            self.start_producer(name)
        for thread in starters:
            thread.join()
        assert set(self.workers) == set(WORKER_NAMES), "a worker did not start"
        holder = wait_until(self.holder, 30, interval=0.1, message="a lease holder")
        wait_until(
            lambda: self._sessions_listening() == 1,
            30,
            interval=0.1,
            message=f"the holder {holder} listens to the trading stream",
        )

    def _sessions_listening(self) -> int:
        listening: int = self.sim.stats()["listening"]
        return listening

    def start_worker(self, name: str) -> WorkerProcess:
        with self._lock:
            self._runs += 1
            log_path = self.directory / f"{name}.{self._runs}.log"
        worker = WorkerProcess(
            self.url,
            log_path,
            queues=ORDERS_QUEUE,
            name=f"{name}-{self._runs}",
            env={**self.env, **WORKER_ENV},
        )
        worker.start(timeout=60)
        self.workers[name] = worker
        return worker

    def start_producer(self, name: str) -> Instance:
        with self._lock:
            self._runs += 1
            run = self._runs
        record = self.directory / f"producer-{name}.{run}.record.jsonl"
        urls = dict(line.split("=", 1) for line in self.sim.env_lines())
        urls["ALPACA_TRADING_API_URL"] = self.rest.url
        process = ProducerProcess(
            self.url,
            urls,
            self.directory / f"producer-{name}.{run}.log",
            streams="orders",
            PRODUCER_NAME=name,
            ALPACA_RECORD_FILE=str(record),
            **PRODUCER_ENV,
            **self.env,
        ).start()
        instance = Instance(name, run, record, process)
        self.instances.append(instance)
        return instance

    def live(self, name: str) -> Instance | None:
        """The running instance of producer ``name``, if any."""
        for instance in reversed(self.instances):
            if instance.name == name:
                proc = instance.process.proc
                return instance if proc is not None and proc.poll() is None else None
        return None

    def holder(self) -> str | None:
        """The lease holder's name (the last one seen while Redis cannot say)."""
        if self._lease_client is None:
            self._lease_client = self.client(socket_timeout=1, socket_connect_timeout=1)
        try:
            raw = self._lease_client.get(KEYS.lease(LEASE))
        except (redis.RedisError, OSError):
            return self.holder_seen
        if raw:
            self.holder_seen = str(json.loads(raw)["holder"])
        return self.holder_seen if raw else None

    def stop_producers(self) -> None:
        """SIGTERM every live producer: each flushes its buffers and its recording."""
        for instance in self.instances:
            proc = instance.process.proc
            if proc is not None and proc.poll() is None and instance.process.stop() == -9:
                log.warning("producer %s did not stop on SIGTERM", instance.label)

    def thaw_all(self) -> None:
        """SIGCONT every process a fault may have left stopped (a run that failed half-way)."""
        procs = [i.process.proc for i in self.instances]
        procs += [w.proc for w in self.workers.values()]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                for member in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]:
                    with contextlib.suppress(psutil.Error):
                        member.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.thaw_all()
        self.stop_producers()
        for worker in self.workers.values():
            worker.stop()
        self.rest.close()
        if self.cluster is not None:
            self.cluster.stop()
        if self.server is not None:
            self.server.stop(kill=True)
        if self._lease_client is not None:
            self._lease_client.close()
