"""The compose deployment's ``demo`` profile on this machine, service by service, for real.

Each process runs its command from docker-compose.yml (less the container-only
``--host 0.0.0.0`` / ``--address=0.0.0.0``) with the venv's scripts first on PATH: the
simulator, the demo producer (its compose environment, URLs pointed at the local simulator),
the prices and orders workers, and on demand Flower. Redis is a local server with the compose
file's settings (AOF every second, ``noeviction``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer, free_port
from alpaca_broker.settings import Settings
from celery_app.config import create_app
from tests.harness.compose import command, environment, local_argv, service_env
from tests.harness.service import ServiceProcess
from tests.harness.workers import REPO

WORKERS = {"worker-prices": "prices", "worker-orders": "orders"}
# Shorter than the defaults so that tests see a heartbeat expire within seconds.
TEST_ENV = {"HEALTH_INTERVAL": "0.5", "LOG_LEVEL": "INFO"}
# Container-only settings: every interface and a fixed port of the container's own. A process
# on this shared host serves no metrics unless a test asks (on loopback, on a free port).
CONTAINER_ONLY_ENV = ("REDIS_URL", "CELERY_BROKER_URL", "METRICS_HOST", "METRICS_PORT",
                      "WORKER_METRICS_PORT")  # fmt: skip


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class OpsStack:
    """The services of docker-compose.yml's demo profile as local processes."""

    def __init__(self, compose: dict[str, Any], redis_server: RedisServer, directory: Path) -> None:
        self.compose = compose
        self.redis_url = redis_server.url
        self.directory = directory
        self.hostname = socket.gethostname()
        self.sim_port = free_port()
        self.metrics_port = free_port()
        self.services: dict[str, ServiceProcess] = {}
        self.client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        # A Celery client of the stack's broker, for pings (not a worker).
        self.control: Celery = create_app(Settings(REDIS_URL=self.redis_url, _env_file=None))
        self.keys = Keys()

    # --- environment ---------------------------------------------------------------------

    def producer_env(self, *, metrics: bool = False, **extra: str) -> dict[str, str]:
        """The demo producer's compose environment, its simulator URLs made local; ``metrics``
        turns on the metrics endpoint (on :attr:`metrics_port`)."""
        env = {
            k: v.replace("simulator:8765", f"127.0.0.1:{self.sim_port}")
            for k, v in self.service_settings("producer-demo").items()
        }
        env.update(TEST_ENV)
        if metrics:
            env["METRICS_PORT"] = str(self.metrics_port)
        env.update(extra)
        return service_env(self.redis_url, **env)

    def service_settings(self, service: str, **values: str) -> dict[str, str]:
        """The service's compose environment (interpolated with ``values``) less the
        container-only settings: the settings compose gives that service and no other."""
        return {
            k: v
            for k, v in environment(self.compose, service, values).items()
            if k not in CONTAINER_ONLY_ENV
        }

    @property
    def producer_name(self) -> str:
        return str(self.compose["services"]["producer-demo"]["environment"]["PRODUCER_NAME"])

    def env(self, **extra: str) -> dict[str, str]:
        """A service's environment: the producer's (as every service shares .env) plus ``extra``."""
        return self.producer_env(metrics=False, **extra)

    # --- services ------------------------------------------------------------------------

    def _service(self, name: str, argv: list[str], env: dict[str, str]) -> ServiceProcess:
        log = self.directory / f"{name}.log"
        service = ServiceProcess(name, argv, env, log)
        self.services[name] = service
        return service

    def start_simulator(self) -> ServiceProcess:
        argv = [*local_argv(command(self.compose, "simulator")), "--port", str(self.sim_port)]
        service = self._service("simulator", argv, self.env())
        return service.start(lambda: _port_open(self.sim_port))

    def worker_name(self, service: str) -> str:
        return f"{WORKERS[service]}@{self.hostname}"

    def worker_answers(self, service: str) -> bool:
        return bool(self.control.control.ping(destination=[self.worker_name(service)], timeout=0.5))

    def launch_worker(self, service: str) -> ServiceProcess:
        """Start a worker without waiting (see :meth:`wait_worker`)."""
        argv = local_argv(command(self.compose, service))
        env = service_env(self.redis_url, **self.service_settings(service))
        return self._service(service, argv, env).start()

    def wait_worker(self, service: str, timeout: float = 30) -> None:
        self.services[service].wait_ready(lambda: self.worker_answers(service), timeout)

    def start_worker(self, service: str) -> ServiceProcess:
        worker = self.launch_worker(service)
        self.wait_worker(service)
        return worker

    def heartbeat(self, name: str | None = None) -> dict[str, Any]:
        raw = self.client.get(self.keys.producer_health(name or self.producer_name))
        return json.loads(raw) if raw else {}

    def producer_connected(self, pid: int) -> bool:
        doc = self.heartbeat()
        streams = doc.get("streams", {})
        return (
            doc.get("pid") == pid
            and doc.get("status") == "running"
            and bool(streams)
            and all(s.get("state") == "connected" for s in streams.values())
        )

    def start_producer(
        self, *, wait: bool = True, metrics: bool = True, **extra: str
    ) -> ServiceProcess:
        """The demo producer (``alpaca-broker producer``), metrics on unless told; ``wait``:
        until every stream is connected, as its heartbeat says."""
        argv = local_argv(command(self.compose, "producer-demo"))
        env = self.producer_env(metrics=metrics, **extra)
        service = self._service("producer-demo", argv, env).start()
        if wait:
            service.wait_ready(lambda: self.producer_connected(service.pid))
        return service

    def start_flower(self, port: int, **env: str) -> ServiceProcess:
        """Flower (its compose command; the Celery app keeps it on loopback) on ``port``."""
        argv = local_argv(command(self.compose, "flower"))
        settings = self.service_settings("flower", **env)
        flower_env = service_env(self.redis_url, **{**settings, "FLOWER_PORT": str(port), **env})
        service = self._service("flower", argv, flower_env)
        return service.start(lambda: _http_ok(f"http://127.0.0.1:{port}/healthcheck"))

    def up(self) -> None:
        """Simulator, both workers (started side by side) and the producer."""
        self.start_simulator()
        for worker in WORKERS:
            self.launch_worker(worker)
        for worker in WORKERS:
            self.wait_worker(worker)
        self.start_producer()

    def ensure_up(self) -> None:
        """Start again whatever a test stopped."""
        for worker in WORKERS:
            if not self.services[worker].running:
                self.start_worker(worker)
        producer = self.services["producer-demo"]
        if not producer.running:
            self.start_producer()

    def down(self) -> None:
        """Stop every service, side by side (each worker's warm shutdown takes a while)."""
        services = list(self.services.values())
        for service in services:
            service.terminate()
        for service in services:
            service.stop()

    # --- commands ------------------------------------------------------------------------

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env=env or self.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def health(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``alpaca-broker health ARGS`` in the producer's environment (as its healthcheck)."""
        return self.run(["alpaca-broker", "health", *args], self.env(**env))
