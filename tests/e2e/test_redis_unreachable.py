"""Every command, when Redis does not answer, says so in one line naming the URL it tried
(password masked) and exits non-zero: no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_broker.redis_server import free_port
from tests.harness.workers import process_env

PASSWORD = "s3cret-pass"


@pytest.mark.parametrize(
    "command",
    [
        ["tail", "prices"],
        ["tail", "orders"],
        ["demo", "--flower-port", "0"],
        ["bench", "--rates", "300", "--redis-url", "URL"],
    ],
    ids=["tail-prices", "tail-orders", "demo", "bench"],
)
def test_a_command_with_redis_unreachable_prints_one_line_naming_the_url_and_exits_1(
    command: list[str], tmp_path: Path
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    argv = [url if part == "URL" else part for part in command]
    done = subprocess.run(
        [sys.executable, "-m", "alpaca_broker", *argv],
        cwd=tmp_path, env=process_env(url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    shown = url.replace(PASSWORD, "***")
    assert lines == [lines[0]], done.stderr
    assert lines[0].startswith(f"alpaca-broker {command[0]}: cannot reach Redis at {shown}: ")
    assert PASSWORD not in done.stderr


def test_health_with_redis_unreachable_names_the_url_and_exits_1(tmp_path: Path) -> None:
    """health keeps its report's shape (UNHEALTHY, then the problem), the URL in the problem."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "health"],
        cwd=tmp_path, env=process_env(url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == "UNHEALTHY"
    assert len(lines) == 2, done.stdout
    assert lines[1].startswith(f"  problem: redis unreachable: {url.replace(PASSWORD, '***')}: ")
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
