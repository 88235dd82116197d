"""``alpaca-broker simulate`` takes its secret from ``SIMULATOR_SECRET`` (the environment or
``.env``) as well as from ``--secret``, so that the secret need not be on its command line
(where ``ps`` shows it to every user of the machine)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import psutil
import pytest
from websockets.sync.client import connect

from simulator import launcher
from tests.harness.workers import process_env
from tests.simulator.test_wire_protocol import MSGPACK, ask

SECRET = "sim-secret-from-env-0001"
AUTH_FAILED = [{"T": "error", "code": 402, "msg": "auth failed"}]
AUTHENTICATED = {"T": "success", "msg": "authenticated"}


@contextmanager
def started(cwd: Path, *options: str, **env: str) -> Iterator[launcher.SimulatorProcess]:
    cwd.mkdir(exist_ok=True)
    environ = process_env("", **env)
    del environ["REDIS_URL"]
    if "SIMULATOR_SECRET" not in env:  # none of the caller's own
        environ.pop("SIMULATOR_SECRET", None)
    sim = launcher.launch(
        ["--port", "0", "--scripted", *options], environ, cwd / "simulator.log", cwd=cwd
    )
    try:
        yield sim
    finally:
        sim.stop()


def _auth(sim: launcher.SimulatorProcess, secret: str) -> list[dict[str, object]]:
    with connect(sim.env["ALPACA_DATA_STREAM_URL"], additional_headers=MSGPACK) as ws:
        msgpack.unpackb(ws.recv(timeout=5))  # connected
        return ask(ws, {"action": "auth", "key": "any-key", "secret": secret})


@pytest.fixture
def from_environment(tmp_path: Path) -> Iterator[launcher.SimulatorProcess]:
    with started(tmp_path / "env", SIMULATOR_SECRET=SECRET) as sim:
        yield sim


def test_simulator_secret_from_the_environment_is_the_only_one_accepted(
    from_environment: launcher.SimulatorProcess,
) -> None:
    assert _auth(from_environment, "wrong-secret") == AUTH_FAILED
    assert _auth(from_environment, SECRET)[0] == AUTHENTICATED
    argv = " ".join(psutil.Process(from_environment.proc.pid).cmdline())
    assert SECRET not in argv  # nothing for `ps` to show


def test_simulator_secret_from_a_dotenv_file_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "dotenv").mkdir()
    (tmp_path / "dotenv" / ".env").write_text(f"SIMULATOR_SECRET={SECRET}\n")
    with started(tmp_path / "dotenv") as sim:
        assert _auth(sim, "wrong-secret") == AUTH_FAILED
        assert _auth(sim, SECRET)[0] == AUTHENTICATED


def test_the_secret_option_wins_and_without_either_any_secret_is_accepted(
    tmp_path: Path,
) -> None:
    with started(
        tmp_path / "option", "--secret", "from-the-option", SIMULATOR_SECRET=SECRET
    ) as sim:
        assert _auth(sim, SECRET) == AUTH_FAILED
        assert _auth(sim, "from-the-option")[0] == AUTHENTICATED
    with started(tmp_path / "neither") as sim:
        assert _auth(sim, "anything")[0] == AUTHENTICATED
