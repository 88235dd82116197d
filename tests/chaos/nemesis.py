"""The nemesis: applies a schedule's faults to the running stack, lane by lane.

Each lane (workers, producers, redis, trading, rest) runs in a thread of its own and applies
its faults in order at their offsets: start the fault, wait for its end, heal it. A fault
whose start takes time (a Sentinel promotion, a worker that must boot) delays only its lane.
A producer fault names a role, resolved when it starts: ``holder`` is the lease holder then,
``standby`` the other producer if it runs (else the fault is skipped, and logged so).
Every fault applied is logged with the times it really began and ended.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.chaos.schedule import Fault, Schedule
from tests.chaos.stack import PRODUCER_NAMES, ChaosStack, Instance
from tests.harness.faults import freeze, thaw

log = logging.getLogger(__name__)
Heal = Callable[[], None]


@dataclass
class Applied:
    """A fault as it happened: on what (``a#2``, ``worker-1``...), from when to when
    (seconds into the run), or why it was skipped."""

    fault: Fault
    target: str = ""
    began: float = 0.0
    ended: float = 0.0
    skipped: str = ""

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.fault}  -> skipped: {self.skipped}"
        return f"{self.fault}  -> {self.target} {self.began:.2f}s..{self.ended:.2f}s"


def _discard(_: object) -> None:
    """A heal returns nothing (the restarted process is in the stack)."""


class Nemesis:
    """Runs ``schedule``'s faults against ``stack``, its clock started at ``start``."""

    def __init__(self, stack: ChaosStack, schedule: Schedule, start: float) -> None:
        self.stack = stack
        self.schedule = schedule
        self.start = start
        self.applied: list[Applied] = []
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.start

    def run(self) -> list[Applied]:
        """Apply every fault; returns once every lane healed its last one."""
        lanes = sorted({fault.lane for fault in self.schedule.faults})
        threads = [
            threading.Thread(target=self._lane, args=(lane,), name=f"nemesis-{lane}")
            for lane in lanes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise RuntimeError(f"the nemesis failed: {self.errors[0]!r}") from self.errors[0]
        return sorted(self.applied, key=lambda a: (a.fault.at, a.fault.kind))

    def _until(self, offset: float) -> None:
        self.stopping.wait(max(0.0, offset - self.now()))

    def _lane(self, lane: str) -> None:
        for fault in (f for f in self.schedule.faults if f.lane == lane):
            self._until(fault.at)
            if self.stopping.is_set():
                return
            applied = Applied(fault, began=self.now())
            try:
                heal = self._begin(fault, applied)
                if heal is not None:
                    self._until(fault.end)
                    heal()
            except BaseException as exc:  # the lane stops; the run reports it
                log.exception("fault %s failed", fault)
                self.errors.append(exc)
                self.stopping.set()
                return
            applied.ended = self.now()
            log.info("chaos: %s", applied)
            with self._lock:
                self.applied.append(applied)

    # --- the faults ----------------------------------------------------------------------------

    def _begin(self, fault: Fault, applied: Applied) -> Heal | None:
        """Start ``fault``; returns what heals it (None when skipped)."""
        begin = getattr(self, "_" + fault.kind.replace("-", "_"))
        heal: Heal | None = begin(fault, applied)
        return heal

    def _producer(self, fault: Fault, applied: Applied) -> Instance | None:
        """The running producer ``fault`` names (its role now), or None (logged skipped)."""
        holder = self.stack.holder()
        if fault.target == "holder":
            name = holder
        else:
            name = next((n for n in PRODUCER_NAMES if n != holder), None)
        instance = self.stack.live(name) if name is not None else None
        if instance is None or instance.process.proc is None:
            applied.skipped = f"no live {fault.target} (holder: {holder})"
            return None
        applied.target = instance.label
        return instance

    def _producer_sigkill(self, fault: Fault, applied: Applied) -> Heal | None:
        instance = self._producer(fault, applied)
        if instance is None or instance.process.proc is None:
            return None
        instance.killed = True
        instance.process.proc.kill()
        instance.process.proc.wait(10)
        return lambda: _discard(self.stack.start_producer(instance.name))

    def _producer_sigstop(self, fault: Fault, applied: Applied) -> Heal | None:
        instance = self._producer(fault, applied)
        if instance is None or instance.process.proc is None:
            return None
        proc = instance.process.proc
        proc.send_signal(signal.SIGSTOP)
        return lambda: proc.send_signal(signal.SIGCONT)

    def _worker_sigkill(self, fault: Fault, applied: Applied) -> Heal:
        applied.target = fault.target
        self.stack.workers[fault.target].kill()
        return lambda: _discard(self.stack.start_worker(fault.target))

    def _worker_child_sigkill(self, fault: Fault, applied: Applied) -> Heal:
        applied.target = fault.target
        self.stack.workers[fault.target].kill_children()
        return lambda: None

    def _worker_sigstop(self, fault: Fault, applied: Applied) -> Heal:
        applied.target = fault.target
        worker = self.stack.workers[fault.target]
        freeze(worker)
        return lambda: thaw(worker)

    def _redis_restart(self, fault: Fault, applied: Applied) -> Heal:
        server = self.stack.server
        assert server is not None
        applied.target = f"redis:{server.port}"
        server.stop(kill=True)
        return server.start

    def _failover(self, fault: Fault, applied: Applied) -> Heal:
        cluster = self.stack.cluster
        assert cluster is not None
        applied.target = f"primary:{cluster.primary_port}"
        cluster.kill_primary()
        return lambda: _discard(cluster.restart_old())

    def _config_window(self, applied: Applied, name: str, value: str) -> Heal:
        client = self.stack.primary_client()
        applied.target = f"{name} on :{client.connection_pool.connection_kwargs['port']}"
        before = client.config_get(name)[name]
        client.config_set(name, value)

        def heal() -> None:
            client.config_set(name, before)
            client.close()

        return heal

    def _oom(self, fault: Fault, applied: Applied) -> Heal:
        # Below any use: every write that may grow memory is refused (noeviction).
        return self._config_window(applied, "maxmemory", "1")

    def _noreplicas(self, fault: Fault, applied: Applied) -> Heal:
        replicas = len(self.stack.data_ports()) - 1
        return self._config_window(applied, "min-replicas-to-write", str(replicas + 1))

    def _readonly(self, fault: Fault, applied: Applied) -> Heal:
        # A primary that never answers: the node turns replica, keeps its data (no sync ever
        # starts) and refuses writes with READONLY until REPLICAOF NO ONE.
        silent = socket.create_server(("127.0.0.1", 0))
        client = self.stack.primary_client()
        applied.target = f"replicaof :{silent.getsockname()[1]}"
        client.execute_command("REPLICAOF", "127.0.0.1", silent.getsockname()[1])

        def heal() -> None:
            client.execute_command("REPLICAOF", "NO", "ONE")
            client.close()
            silent.close()

        return heal

    def _socket_drop(self, fault: Fault, applied: Applied) -> Heal:
        applied.target = f"{self.stack.sim.drop('trading')} sockets"
        return lambda: None

    def _trading_outage(self, fault: Fault, applied: Applied) -> Heal:
        sim = self.stack.sim
        sim.reject_upgrades("trading", 503, None)
        applied.target = f"{sim.drop('trading')} sockets"
        return lambda: sim.clear_upgrade_rejections("trading")

    def _rest_errors(self, fault: Fault, applied: Applied) -> Heal:
        applied.target = "rest"
        self.stack.rest.fail(500)
        return self.stack.rest.heal

    def _rest_slow(self, fault: Fault, applied: Applied) -> Heal:
        applied.target = "rest"
        self.stack.rest.slow(fault.param)
        return self.stack.rest.heal
