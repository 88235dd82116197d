"""Start ``alpaca-broker simulate`` as a child process and read the settings it prints.

The simulator prints ``KEY=VALUE`` lines (the URLs a client puts in ``.env``) once it
serves, flushed together. :func:`launch` reads them until a line that is not one (a ready
marker), until ``ALPACA_NEWS_STREAM_URL`` (the last one the contract lists), or, once the
first three are in, until the output pauses; what the simulator prints later goes to its log.
Used by ``alpaca-broker demo`` and ``alpaca-broker bench``.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REQUIRED = ("ALPACA_DATA_STREAM_URL", "ALPACA_TRADING_STREAM_URL", "ALPACA_TRADING_API_URL")
LAST = "ALPACA_NEWS_STREAM_URL"
KEY = re.compile(r"[A-Z][A-Z0-9_]*")
QUIET = 0.3  # seconds of silence after the required lines that end the start-up block


class SimulatorExited(RuntimeError):
    """The simulator stopped (or never printed its settings) during start-up."""


@dataclass
class SimulatorProcess:
    """A running simulator process and the ``KEY=VALUE`` settings it printed."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)


def command(*options: str) -> list[str]:
    """``alpaca-broker simulate OPTIONS`` through this interpreter's installed package."""
    return [sys.executable, "-m", "simulator", *options]


def launch(
    options: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    *,
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> SimulatorProcess:
    """Start the simulator with ``options`` (``--port 0`` picks a free port), its stderr and
    later stdout in ``log``; returns once it printed its settings."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            command(*options),
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    assert proc.stdout is not None
    try:
        settings, rest = read_settings(proc.stdout, timeout)
    except SimulatorExited as exc:
        proc.kill()
        proc.wait(5)
        raise SimulatorExited(f"{exc}; see {log}") from None
    _drain(proc.stdout, log, rest)
    return SimulatorProcess(proc, settings)


def read_settings(stdout: IO[bytes], timeout: float) -> tuple[dict[str, str], bytes]:
    """The start-up ``KEY=VALUE`` lines on ``stdout``, and the bytes read past them."""
    fd, buffer, settings = stdout.fileno(), b"", dict[str, str]()
    deadline = time.monotonic() + timeout
    while LAST not in settings:
        complete = all(key in settings for key in REQUIRED)
        left = deadline - time.monotonic()
        if left <= 0 and not complete:
            raise SimulatorExited(f"the simulator printed no settings in {timeout:.0f}s")
        if not select.select([fd], [], [], min(QUIET, left) if complete else left)[0]:
            if complete:
                break
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise SimulatorExited("the simulator exited during start-up")
        buffer += chunk
        while b"\n" in buffer and LAST not in settings:
            line, buffer = buffer.split(b"\n", 1)
            key, sep, value = line.decode(errors="replace").strip().partition("=")
            if not (sep and KEY.fullmatch(key)):
                return settings, buffer  # a ready marker (or any other line) ends the block
            settings[key] = value
    return settings, buffer


def _drain(stdout: IO[bytes], log: Path, rest: bytes) -> None:
    """Copy what the simulator prints after start-up (``rate:`` lines) to ``log``, so
    that a full pipe never blocks it."""

    def copy() -> None:
        with log.open("ab") as out:
            out.write(rest)
            while chunk := os.read(stdout.fileno(), 1 << 16):
                out.write(chunk)
                out.flush()
        stdout.close()

    threading.Thread(target=copy, name="simulator-stdout", daemon=True).start()
