"""docker-compose.yml as the test suite reads it: each service's command and healthcheck, run
here as real processes (with the venv's ``bin`` first on PATH, as the image has them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.harness.workers import REPO, process_env

COMPOSE_FILE = REPO / "docker-compose.yml"
VENV_BIN = Path(sys.executable).parent

# Options that only make sense inside a container (listen on every interface of the
# container's own network namespace); a test on a shared host keeps to loopback instead.
CONTAINER_ONLY = ("--address=0.0.0.0",)
CONTAINER_ONLY_PAIRS = (("--host", "0.0.0.0"),)


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as plain data (YAML anchors and ``<<`` merges resolved)."""
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def command(compose: dict[str, Any], service: str) -> list[str]:
    """The service's command in exec form."""
    cmd = compose["services"][service]["command"]
    assert isinstance(cmd, list), f"{service}: write commands in exec form (a list)"
    return [str(part) for part in cmd]


def local_argv(cmd: list[str]) -> list[str]:
    """``cmd`` without its container-only options (see :data:`CONTAINER_ONLY`)."""
    out: list[str] = []
    skip = False
    for i, part in enumerate(cmd):
        if skip:
            skip = False
            continue
        if part in CONTAINER_ONLY:
            continue
        if (part, cmd[i + 1] if i + 1 < len(cmd) else None) in CONTAINER_ONLY_PAIRS:
            skip = True
            continue
        out.append(part)
    return out


def unescape(text: str) -> str:
    """Compose's ``$$`` (a literal ``$`` for the container's shell) as the shell sees it."""
    assert "$" not in text.replace("$$", ""), (
        f"{text!r}: a single $ is interpolated by compose on the host; write $$"
    )
    return text.replace("$$", "$")


_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?([-?])([^}]*))?\}")


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` with ``values`` as
    the project's environment (.env and the shell)."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        value = values.get(name, "")
        if value:
            return value
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return _VARIABLE.sub(one, text)


def environment(
    compose: dict[str, Any], service: str, values: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables compose gives the service's container (its ``environment:``, interpolated
    with ``values``; no service here has an ``env_file`` a test could supply)."""
    declared = compose["services"][service].get("environment", {})
    return {k: interpolate(str(v), values or {}) for k, v in declared.items()}


def healthcheck(compose: dict[str, Any], service: str) -> list[str]:
    """The service's healthcheck as an argv (``CMD-SHELL`` runs under ``sh -c``)."""
    test = compose["services"][service]["healthcheck"]["test"]
    kind, rest = test[0], [unescape(str(part)) for part in test[1:]]
    if kind == "CMD-SHELL":
        return ["sh", "-c", " ".join(rest)]
    assert kind == "CMD", f"{service}: healthcheck test must start with CMD or CMD-SHELL"
    return rest


def service_env(redis_url: str, **extra: str) -> dict[str, str]:
    """A project process's environment with the venv's scripts (``celery``, ``alpaca-broker``,
    ``python``) first on PATH, as they are in the image."""
    env = process_env(redis_url, **extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_healthcheck(
    compose: dict[str, Any], service: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the service's healthcheck here; its exit code is Docker's verdict (0 healthy)."""
    return subprocess.run(
        healthcheck(compose, service),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
