"""Redis URLs as the commands print them: every password masked, the userinfo's and a
``?password=`` query parameter's (redis-py reads both)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alpaca_broker.bars import without_password
from alpaca_broker.redaction import Redactor, masked_url, url_secrets
from alpaca_broker.redis_server import free_port, masked, unreachable
from tests.foundation.test_settings import _run

PASSWORD = "q-pass/7d2e"  # percent-encoded in the URLs below


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:p%40ss@h:1/0", "rediss://user:***@h:1/0"),
        ("redis://h:1/0?password=pw", "redis://h:1/0?password=***"),
        ("redis://h:1/0?db=2&password=p%2Fw&x=1", "redis://h:1/0?db=2&password=***&x=1"),
        ("redis://u@h:1/0?Password=pw", "redis://u@h:1/0?Password=***"),
        ("redis://:a@h:1?sentinel_password=b", "redis://:***@h:1?sentinel_password=***"),
        ("redis://h:1/0?db=2", "redis://h:1/0?db=2"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
    ],
)
def test_every_password_of_a_url_is_masked_and_nothing_else(url: str, shown: str) -> None:
    assert masked(url) == masked_url(url) == without_password(url) == shown


def test_url_secrets_are_each_password_as_written_and_decoded() -> None:
    url = "redis://:a%2Fb@h:1/0?password=c%2Bd+e&db=1"
    assert url_secrets(url) == ["a%2Fb", "a/b", "c%2Bd+e", "c+d e"]
    assert url_secrets("redis://h:1/0?db=1") == []


def test_log_lines_mask_a_query_password_even_a_short_unknown_one() -> None:
    redact = Redactor([])
    line = "connecting to redis://h:1/0?db=0&password=ab (attempt 2)"
    assert redact(line) == "connecting to redis://h:1/0?db=0&password=*** (attempt 2)"


def test_the_unreachable_line_masks_a_query_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = "redis://127.0.0.1:1/0?password=s3cret-q"
    with pytest.raises(SystemExit):
        unreachable("tail", url, "Error connecting; password=s3cret-q was refused")
    err = capsys.readouterr().err
    assert "s3cret-q" not in err
    assert err.startswith("alpaca-broker tail: cannot reach Redis at redis://127.0.0.1:1/0?pass")


@pytest.mark.parametrize("command", [["tail", "orders"], ["health", "--json"]])
def test_commands_never_print_a_query_password(command: list[str], tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?password=q-pass%2F7d2e"
    done = _run([sys.executable, "-m", "alpaca_broker", *command], tmp_path, REDIS_URL=url)
    assert done.returncode == 1
    printed = done.stdout + done.stderr
    assert PASSWORD not in printed
    assert "q-pass%2F7d2e" not in printed
    assert "q-pass" not in printed
    shown = url.replace("q-pass%2F7d2e", "***")
    if command[0] == "health":
        assert json.loads(done.stdout)["redis"]["error"].startswith(f"{shown}: ")
    else:
        assert done.stderr.startswith(f"alpaca-broker tail: cannot reach Redis at {shown}: ")
