"""Child processes of ``alpaca-broker demo`` and ``bench``: each in its own session, logging
to its own file, stopped with SIGTERM and then, with whatever it left behind, SIGKILL; and
each child's environment holding only the secrets it needs (:func:`scoped_env`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

ALPACA_CREDENTIALS: Final = (
    "ALPACA_API_KEY",
    "ALPACA_SECRET_KEY",
    "APCA_API_KEY_ID",
    "APCA_API_SECRET_KEY",
)
"""The Alpaca credential variables (with their aliases): the producer's alone."""
FLOWER_LOGIN: Final = "FLOWER_BASIC_AUTH"
"""Flower's login: Flower's alone."""


def scoped_env(
    env: Mapping[str, str], *, alpaca_credentials: bool = False, flower_login: bool = False
) -> dict[str, str]:
    """``env`` for a child that gets only the secrets it needs.

    Without ``alpaca_credentials`` every credential variable is set empty rather than
    removed: the environment wins over ``.env``, so keys in a ``.env`` of the working
    directory stay out of that child too. Without ``flower_login`` Flower's login is left
    out (only Flower reads it, and from its environment only).
    """
    scoped = dict(env)
    if not alpaca_credentials:
        scoped.update(dict.fromkeys(ALPACA_CREDENTIALS, ""))
    if not flower_login:
        scoped.pop(FLOWER_LOGIN, None)
    return scoped


class Children:
    """Named child processes; :meth:`stop` ends them in reverse start order."""

    def __init__(self, logs: Path, cwd: Path | None = None) -> None:
        self.logs = logs
        self.cwd = cwd  # None: the caller's working directory (and its .env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr in ``LOGS/NAME.log``."""
        with self.log(name).open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.adopt(name, proc)
        return proc

    def log(self, name: str) -> Path:
        """Where the child ``name`` writes."""
        return self.logs / f"{name}.log"

    def adopt(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        """Take a process started elsewhere (in its own session) under the same care."""
        self.procs[name] = proc

    def forget(self, name: str) -> None:
        """Drop an exited child (before starting another under its name)."""
        self.procs.pop(name).wait(5)

    def dead(self) -> list[str]:
        """The names of the children that have exited."""
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self, *names: str, timeout: float = 15.0) -> None:
        """SIGTERM ``names`` (default: all), newest first; SIGKILL each process group
        still there after ``timeout`` seconds (a worker with a deep backlog, a pool child)."""
        chosen = [(n, p) for n, p in reversed(self.procs.items()) if not names or n in names]
        for _, proc in chosen:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            del self.procs[name]

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
