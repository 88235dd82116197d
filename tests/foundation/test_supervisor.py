"""The producer supervisor: restarts with backoff, fatal stops, bounded clean shutdown."""

from __future__ import annotations

import functools
import itertools
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from producers.supervisor import Backoff, Supervisor
from tests.harness.units import CrashingUnit, HoldingUnit, RejectedUnit, StuckUnit
from tests.harness.wait import wait_until
from tests.harness.workers import REPO


def _run_in_thread(supervisor: Supervisor) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()), daemon=True)
    thread.start()
    return thread, result


def _same(unit: HoldingUnit) -> HoldingUnit:
    return unit


def test_backoff_doubles_up_to_the_cap_with_jitter_in_upper_half() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    for attempt, ceiling in enumerate([1, 2, 4, 8, 8, 8]):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not constant


def test_crashing_unit_is_restarted_with_growing_backoff() -> None:
    starts: list[float] = []
    supervisor = Supervisor(
        {"flaky": lambda: CrashingUnit("flaky", starts, crashes=4)},
        backoff=Backoff(base=0.1, cap=10.0),
    )
    thread, result = _run_in_thread(supervisor)
    wait_until(lambda: len(starts) == 5, 10, message="fifth start")
    wait_until(lambda: supervisor.states()["flaky"]["thread"] == "running", 2)
    state = supervisor.states()["flaky"]
    assert state["restarts"] == 4
    assert state["last_error"] == "RuntimeError: crash 4"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for attempt, gap in enumerate(gaps):  # delay n is in [0.1 * 2**n / 2, 0.1 * 2**n] + tick
        assert 0.05 * 2**attempt <= gap <= 0.1 * 2**attempt + 0.3, gaps
    supervisor.request_stop()
    thread.join(5)
    assert result == [0]


def test_rejected_credentials_stop_every_unit_with_exit_code_3(tmp_path: Path) -> None:
    holder = HoldingUnit("holder", tmp_path / "held")
    supervisor = Supervisor({"holder": lambda: holder, "rejected": RejectedUnit})
    thread, result = _run_in_thread(supervisor)
    thread.join(5)
    assert result == [3]
    assert supervisor.states()["rejected"]["thread"] == "failed"
    assert supervisor.states()["holder"]["thread"] == "stopped"
    assert (tmp_path / "held").exists()  # the healthy unit was still flushed


def test_stop_flushes_every_unit_and_exits_0(tmp_path: Path) -> None:
    units = [HoldingUnit(n, tmp_path / n) for n in ("a", "b")]
    factories = {u.name: functools.partial(_same, u) for u in units}
    supervisor = Supervisor(factories, shutdown_timeout=5)
    thread, result = _run_in_thread(supervisor)
    wait_until(lambda: all(s.get("held", 0) > 3 for s in supervisor.states().values()), 5)
    supervisor.request_stop()
    thread.join(6)
    assert result == [0]
    for unit in units:
        assert unit.flushed_with is not None
        assert 0 < unit.flushed_with <= 5
        assert (tmp_path / unit.name).read_text().startswith("tick-0\n")


def test_shutdown_is_bounded_when_a_unit_ignores_stop(tmp_path: Path) -> None:
    slow = HoldingUnit("slow", tmp_path / "slow", stop_delay=0.3)
    supervisor = Supervisor({"stuck": StuckUnit, "slow": lambda: slow}, shutdown_timeout=1.0)
    thread, result = _run_in_thread(supervisor)
    wait_until(lambda: supervisor.states()["slow"].get("held", 0) > 0, 5)
    began = time.monotonic()
    supervisor.request_stop()
    thread.join(5)
    assert result == [0]
    assert time.monotonic() - began < 2.0
    assert slow.flushed_with is not None  # flushed with what was left of the bound


def test_sigterm_stops_the_producer_process_cleanly_within_the_bound(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.supervised", str(tmp_path)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: (tmp_path / "started").exists(), 15)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(15)
    elapsed = time.monotonic() - began
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 0, stderr
    assert elapsed < 5.0
    assert "received SIGTERM, stopping" in stderr
    for name in ("alpha", "beta"):  # each unit was flushed (what it held is checked above)
        assert (tmp_path / f"{name}.flushed").exists()
