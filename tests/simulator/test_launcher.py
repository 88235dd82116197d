"""simulator.launcher: the simulator as a child process, its start-up settings read."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import requests

from simulator import launcher
from tests.harness.workers import process_env

THREE = [
    b"ALPACA_DATA_STREAM_URL=ws://h:1/v2/iex\n",
    b"ALPACA_TRADING_STREAM_URL=ws://h:1/stream\n",
    b"ALPACA_TRADING_API_URL=http://h:1\n",
]
FOUR_MORE = [
    b"ALPACA_DATA_API_URL=http://h:1\n",
    b"ALPACA_CRYPTO_STREAM_URL=ws://h:1/v1beta3/crypto/us\n",
    b"ALPACA_OPTION_STREAM_URL=ws://h:1/v1beta1/indicative\n",
    b"ALPACA_NEWS_STREAM_URL=ws://h:1/v1beta1/news\n",
]


@pytest.fixture
def pipe() -> Iterator[tuple[IO[bytes], int]]:
    read, write = os.pipe()
    with os.fdopen(read, "rb", buffering=0) as reader:
        yield reader, write
        os.close(write)


def test_the_three_lines_of_today_end_after_a_pause(pipe: tuple[IO[bytes], int]) -> None:
    reader, write = pipe
    os.write(write, b"".join(THREE))
    settings, rest = launcher.read_settings(reader, timeout=5)
    assert list(settings) == list(launcher.REQUIRED)
    assert settings["ALPACA_TRADING_API_URL"] == "http://h:1"
    assert rest == b""


def test_all_seven_lines_end_at_the_news_url_at_once_even_when_written_one_by_one(
    pipe: tuple[IO[bytes], int],
) -> None:
    reader, write = pipe

    def write_slowly() -> None:
        for line in [*THREE, *FOUR_MORE]:
            os.write(write, line)
            time.sleep(0.05)

    threading.Thread(target=write_slowly).start()
    settings, _ = launcher.read_settings(reader, timeout=5)
    assert len(settings) == 7
    assert settings["ALPACA_NEWS_STREAM_URL"] == "ws://h:1/v1beta1/news"


def test_a_line_that_is_not_a_setting_is_a_ready_marker(pipe: tuple[IO[bytes], int]) -> None:
    reader, write = pipe
    os.write(write, b"".join([*THREE, b"ALPACA_DATA_API_URL=http://h:1\n", b"ready\nrate: 5\n"]))
    settings, rest = launcher.read_settings(reader, timeout=5)
    assert len(settings) == 4
    assert rest == b"rate: 5\n"


def test_a_simulator_that_exits_during_start_up_is_reported() -> None:
    read, write = os.pipe()
    os.write(write, THREE[0])
    os.close(write)
    with (
        os.fdopen(read, "rb", buffering=0) as reader,
        pytest.raises(launcher.SimulatorExited, match="exited during start-up"),
    ):
        launcher.read_settings(reader, timeout=5)


def test_launch_starts_the_installed_simulator_serves_its_urls_and_stops(tmp_path: Path) -> None:
    sim = launcher.launch(
        ["--port", "0", "--scripted", "--log-level", "WARNING"],
        process_env(""),
        tmp_path / "simulator.log",
        cwd=tmp_path,
    )
    try:
        assert set(launcher.REQUIRED) <= set(sim.env)
        account = requests.get(
            sim.env["ALPACA_TRADING_API_URL"] + "/v2/account",
            headers={"APCA-API-KEY-ID": "any", "APCA-API-SECRET-KEY": "thing"},
            timeout=10,
        )
        assert account.json()["status"] == "ACTIVE"
    finally:
        assert sim.stop() == 0
