"""``alpaca-broker simulate`` (run here as ``python -m simulator``)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
import requests
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from alpaca_broker.recording import RecordingWriter
from simulator import messages
from simulator.cli import build_parser, main
from simulator.probe import count_messages
from tests.harness.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Cli:
    """The simulator as a subprocess, its stdout lines collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", "--port", "0", "--log-level", "WARNING", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(line.rstrip("\n") for line in stdout), daemon=True
        )
        self._reader.start()

    def env(self) -> dict[str, str]:
        wait_until(lambda: len(self.lines) >= 7, message="seven start-up lines")
        return dict(line.split("=", 1) for line in self.lines[:7])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(15)


@pytest.fixture
def cli_factory() -> Iterator[Callable[..., Cli]]:
    started: list[Cli] = []

    def start(*args: str) -> Cli:
        started.append(Cli(*args))
        return started[-1]

    yield start
    for cli in started:
        if cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait(5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_prints_the_seven_env_lines_in_order_with_the_bound_port_and_stops_cleanly(
    cli_factory, sig: int
) -> None:
    cli = cli_factory("--scripted")
    env = cli.env()
    assert list(env) == [
        "ALPACA_DATA_STREAM_URL",
        "ALPACA_TRADING_STREAM_URL",
        "ALPACA_TRADING_API_URL",
        "ALPACA_DATA_API_URL",
        "ALPACA_CRYPTO_STREAM_URL",
        "ALPACA_OPTION_STREAM_URL",
        "ALPACA_NEWS_STREAM_URL",
    ]
    port = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", env["ALPACA_TRADING_API_URL"])
    assert port
    assert port.group(1) != "0"
    base = f"127.0.0.1:{port.group(1)}"
    assert env["ALPACA_DATA_STREAM_URL"] == f"ws://{base}/v2/iex"
    assert env["ALPACA_TRADING_STREAM_URL"] == f"ws://{base}/stream"
    assert env["ALPACA_DATA_API_URL"] == f"http://{base}"
    assert env["ALPACA_CRYPTO_STREAM_URL"] == f"ws://{base}/v1beta3/crypto/us"
    assert env["ALPACA_OPTION_STREAM_URL"] == f"ws://{base}/v1beta1/indicative"
    assert env["ALPACA_NEWS_STREAM_URL"] == f"ws://{base}/v1beta1/news"
    account = requests.get(
        env["ALPACA_TRADING_API_URL"] + "/v2/account",
        headers={"APCA-API-KEY-ID": "any", "APCA-API-SECRET-KEY": "thing"},
        timeout=5,
    )
    assert account.json()["status"] == "ACTIVE"
    assert cli.stop(sig) == 0


def test_rate_max_measures_and_prints_the_achieved_rate(cli_factory) -> None:
    cli = cli_factory("--rate", "max", "--order-rate", "0", "--rate-interval", "0.5")
    url = cli.env()["ALPACA_DATA_STREAM_URL"]
    messages, frames, _ = asyncio.run(count_messages(url, 1.0))
    assert messages == frames * 100  # frames of 100
    wait_until(lambda: any(line.startswith("rate: ") for line in cli.lines), message="a rate line")
    line = next(line for line in cli.lines if line.startswith("rate: "))
    assert re.fullmatch(r"rate: [\d,]+ market messages/s over [\d.]+ s \(frames of 100, .*\)", line)
    assert cli.stop() == 0


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: alpaca-broker simulate")
    for action in build_parser()._actions:
        for option in action.option_strings:
            assert option in text
        if action.option_strings and action.help is not None:
            assert action.help.strip(), action.option_strings


@pytest.mark.parametrize(
    "argv",
    [["--rate", "-5"], ["--mix", "t=1,z=2"], ["--fault", "explode:3"], ["--frame-size", "0"]],
)
def test_bad_options_exit_2_with_a_message(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert "alpaca-broker simulate: error:" in capsys.readouterr().err


def test_periodic_drop_fault_cuts_connections_without_a_close_frame(cli_factory) -> None:
    cli = cli_factory("--scripted", "--fault", "drop:0.3")
    url = cli.env()["ALPACA_DATA_STREAM_URL"]
    with connect(url, additional_headers={"Content-Type": "application/msgpack"}) as ws:
        ws.recv(timeout=5)
        with pytest.raises(ConnectionClosedError) as cut:
            ws.recv(timeout=5)
    assert cut.value.rcvd is None  # no close frame
    assert cli.stop() == 0


def test_replay_option_plays_a_recording_to_a_subscriber(cli_factory, tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    trade = messages.trade("AAPL", 1_700_000_000_000_000_001, trade_id=4, price=2.5, size=3)
    with RecordingWriter(path) as writer:
        writer.write("data", msgpack.packb([{"T": "success", "msg": "connected"}]))
        writer.write("data", msgpack.packb([trade]))
    cli = cli_factory("--replay", str(path), "--replay-speed", "max")
    url = cli.env()["ALPACA_DATA_STREAM_URL"]
    with connect(url, additional_headers={"Content-Type": "application/msgpack"}) as ws:
        ws.recv(timeout=5)
        ws.send(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
        ws.recv(timeout=5)
        ws.send(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
        ws.recv(timeout=5)
        assert ws.recv(timeout=5) == msgpack.packb([trade])  # byte for byte
    assert cli.stop() == 0
