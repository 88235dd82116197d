"""`alpaca-broker bench` stays runnable: a tiny run of two designs (the prices on a broker of
their own) prints the table and files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness.workers import REPO, process_env


def test_a_short_benchmark_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable, "-m", "alpaca_broker", "bench", "--designs", "pipeline,direct",
            "--rates", "300", "--duration", "2", "--warmup", "2", "--out", str(out),
            "--prices-broker", "own",
        ],
        cwd=REPO, env=process_env(""), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pipeline / direct throughput" in result.stdout
    rows = json.loads((out / "bench.json").read_text())
    assert [r["design"] for r in rows] == ["pipeline", "direct"]
    pipeline = rows[0]
    assert pipeline["prices"]["events_per_s"] > 100
    assert pipeline["received"] == pipeline["published"]  # every event reached its channel
