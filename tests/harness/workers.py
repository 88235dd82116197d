"""Real Celery workers in subprocesses (`celery -A ... worker`), killable like in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil

from tests.harness.wait import wait_until

REPO = Path(__file__).resolve().parents[2]


def process_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment for a project process: this Redis, test credentials, the repo on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "APCA_", "CELERY_"))}
    env.update(
        REDIS_URL=redis_url,
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """``celery -A APP worker`` as a subprocess, logging to ``log_path``."""

    def __init__(
        self,
        redis_url: str,
        log_path: Path,
        *,
        app: str = "celery_app",
        queues: str = "prices,orders",
        concurrency: int = 1,
        name: str = "test",
        env: Mapping[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_path
        self.argv = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "-Q", queues, "-n", f"{name}@%h", "-P", "prefork", "-c", str(concurrency),
            "--without-gossip", "--without-mingle", "-l", "INFO", *extra_args,
        ]  # fmt: skip
        self.env = process_env(redis_url, **dict(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        wait_until(lambda: self._ready(offset), timeout, interval=0.1, message="worker ready")
        return self

    def _ready(self, offset: int) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log()}")
        return " ready." in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children()

    def kill_children(self) -> None:
        """SIGKILL every pool child (the main process replaces them)."""
        for child in self.children():
            child.send_signal(signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the main process and its children at once, as an OOM kill would."""
        if self.proc is None:
            return
        family = [*self.children(), psutil.Process(self.pid)]
        for proc in family:
            proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(family, timeout=10)
        self.proc.wait(10)
        self.proc = None

    def stop(self, timeout: float = 30.0) -> int:
        """Warm shutdown (SIGTERM); returns the exit code."""
        if self.proc is None:
            return 0
        children = self.children()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        psutil.wait_procs(children, timeout=5)
        self.proc = None
        return code
