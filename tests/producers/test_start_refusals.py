"""The producer refuses, at start, with one line naming the variable and exit code 2: an
Alpaca key or secret shorter than 8 characters (never an Alpaca key, and too short to be
redacted everywhere), and a recording file that is a symbolic link (a link planted at
``ALPACA_RECORD_FILE`` would have it write market data wherever the link points)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_broker.demo import DEMO_KEY, DEMO_SECRET
from alpaca_broker.errors import ConfigError
from alpaca_broker.recording import RecordingError, RecordingWriter
from alpaca_broker.settings import MIN_CREDENTIAL_CHARS, Settings
from tests.harness.compose import load_compose
from tests.harness.producer import TEST_KEY, TEST_SECRET
from tests.harness.workers import process_env

SHORT = "short-7"  # 7 characters


def _producer(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = process_env("redis://127.0.0.1:1/0", **env)
    return subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "producer"],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("key", "secret", "variable"),
    [(SHORT, TEST_SECRET, "ALPACA_API_KEY"), (TEST_KEY, SHORT, "ALPACA_SECRET_KEY")],
)
def test_a_key_or_secret_under_8_characters_is_refused_naming_the_variable(
    key: str, secret: str, variable: str
) -> None:
    settings = Settings(ALPACA_API_KEY=key, ALPACA_SECRET_KEY=secret, _env_file=None)
    with pytest.raises(ConfigError) as caught:
        settings.credentials()
    assert caught.value.variable == variable
    assert SHORT not in str(caught.value)


def test_the_producer_with_a_short_secret_stops_at_once_with_exit_2(tmp_path: Path) -> None:
    done = _producer(tmp_path, ALPACA_API_KEY=TEST_KEY, ALPACA_SECRET_KEY=SHORT)
    assert done.returncode == 2
    line = _one_line(done)
    assert line.startswith("alpaca-broker: configuration error: ALPACA_SECRET_KEY: ")
    assert SHORT not in done.stdout + done.stderr


def test_the_keys_this_project_supplies_itself_are_long_enough() -> None:
    for value in (DEMO_KEY, DEMO_SECRET):  # `alpaca-broker demo`
        assert len(value) >= MIN_CREDENTIAL_CHARS, value
    demo = load_compose()["services"]["producer-demo"]["environment"]  # compose, demo profile
    for name in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        assert len(demo[name]) >= MIN_CREDENTIAL_CHARS, name


def test_a_recording_is_never_written_through_a_symbolic_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("someone else's file\n")
    link = tmp_path / "recording.jsonl"
    link.symlink_to(target)
    with pytest.raises(RecordingError, match="symbolic link"):
        RecordingWriter(link)
    assert target.read_text() == "someone else's file\n"  # untouched
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "not-yet.jsonl")
    with pytest.raises(RecordingError, match="symbolic link"):
        RecordingWriter(dangling)
    assert not (tmp_path / "not-yet.jsonl").exists()  # not created through the link


def test_the_producer_refuses_a_recording_file_that_is_a_symbolic_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.jsonl"
    (tmp_path / "recording.jsonl").symlink_to(target)
    done = _producer(
        tmp_path,
        ALPACA_API_KEY=TEST_KEY,
        ALPACA_SECRET_KEY=TEST_SECRET,
        ALPACA_RECORD_FILE="recording.jsonl",
    )
    assert done.returncode == 2, done.stderr
    # After its "starting producer" log line, one line: no traceback.
    errors = [line for line in done.stderr.splitlines() if " [producer] " not in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("alpaca-broker: configuration error: ALPACA_RECORD_FILE: ")
    assert "symbolic link" in errors[0]
    assert not target.exists()
