"""Any long-running command of the project as a subprocess: a compose service run for real."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil

from tests.harness.wait import wait_until
from tests.harness.workers import REPO


class ServiceProcess:
    """``argv`` in the repo root with ``env``, output in ``log_path``; stoppable, killable,
    pausable (SIGSTOP of its child processes, as a stuck pool would look)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self, ready: Callable[[], object] | None = None, timeout: float = 30
    ) -> ServiceProcess:
        """Start, then wait until ``ready()`` is truthy (the process must not exit meanwhile)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        if ready is not None:
            self.wait_ready(ready, timeout)
        return self

    def wait_ready(self, ready: Callable[[], object], timeout: float = 30) -> None:
        """Wait until ``ready()`` is truthy; fails at once, with the log, if the process exits."""
        wait_until(
            lambda: self._alive_or_raise() and ready(),
            timeout,
            interval=0.1,
            message=f"{self.name} ready (its log: {self.log_path})",
        )

    def _alive_or_raise(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children(recursive=True)

    def pause_children(self) -> list[psutil.Process]:
        """SIGSTOP every child process (a worker's pool): the parent still answers."""
        children = self.children()
        for child in children:
            child.send_signal(signal.SIGSTOP)
        return children

    @staticmethod
    def resume(processes: list[psutil.Process]) -> None:
        for proc in processes:
            if proc.is_running():
                proc.send_signal(signal.SIGCONT)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def terminate(self) -> list[psutil.Process]:
        """Send SIGTERM (a warm shutdown) without waiting; returns the children to wait for."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        family = self.children()
        self.resume(family)  # a stopped child cannot shut down
        self.proc.send_signal(signal.SIGTERM)
        return family

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (a warm shutdown) and wait; SIGKILL the family after ``timeout``."""
        if self.proc is None:
            return None
        family = self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        psutil.wait_procs(family, timeout=5)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the process and its children at once (a crash, an OOM kill)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        family = [*self.children(), psutil.Process(self.pid)]
        for proc in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(family, timeout=10)
        self.proc.wait(10)
