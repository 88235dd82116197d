"""`alpaca-broker producer` as a subprocess pointed at a simulator and a Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.keys import Keys
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, process_env

TEST_KEY = "PKTESTKEY0000000001"
TEST_SECRET = "test-secret-do-not-log-0001"


class ProducerProcess:
    """One producer process; ``health()`` reads its heartbeat from Redis."""

    def __init__(
        self,
        redis_url: str,
        urls: dict[str, str],
        log_path: Path,
        streams: str = "prices,orders",
        **env: str,
    ) -> None:
        self.redis_url = redis_url
        self.log_path = log_path
        self.argv = [sys.executable, "-m", "alpaca_broker", "producer", "--streams", streams]
        self.env = process_env(
            redis_url,
            ALPACA_API_KEY=TEST_KEY,
            ALPACA_SECRET_KEY=TEST_SECRET,
            HEALTH_INTERVAL="0.5",
            **urls,
        )
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._redis = redis.Redis.from_url(redis_url, decode_responses=True)

    def start(self) -> ProducerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> dict[str, Any]:
        raw = self._redis.get(Keys().producer_health(self.env.get("PRODUCER_NAME", "default")))
        return json.loads(raw) if raw else {}

    def stream_state(self, stream: str) -> str | None:
        state: str | None = self.health().get("streams", {}).get(stream, {}).get("state")
        return state

    def wait_connected(self, *streams: str, timeout: float = 20) -> None:
        def all_connected() -> bool:
            return all(self.stream_state(s) == "connected" for s in streams)

        wait_until(all_connected, timeout, message=f"{streams} connected\n{self.log()}")

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9
