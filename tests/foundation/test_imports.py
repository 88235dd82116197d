"""Importing any module outside ``celery_app`` builds no Celery app and reads no file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness.workers import REPO

PROBE = r"""
import importlib, pkgutil, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
import celery._state
names = []
for package in ("alpaca_broker", "producers", "tasks"):
    module = importlib.import_module(package)
    names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
skip = {"alpaca_broker.__main__"}
for name in names:
    if name not in skip:
        importlib.import_module(name)
import celery_app  # the package itself is lazy too
dotenv = [p for p in opened if p.endswith(".env")]
apps = list(celery._state._apps)
print(len(names), len(apps), dotenv, "app" in vars(celery_app))
"""


def test_importing_every_producer_task_and_core_module_builds_no_app_and_reads_no_env(
    tmp_path: Path,
) -> None:
    # A .env that would stop any process reading it: an import must not even open it.
    (tmp_path / ".env").write_text("ALPACA_FEED=not-a-feed\n")
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    count, apps, dotenv, built = result.stdout.split(maxsplit=3)
    assert int(count) > 20
    assert apps == "0"
    assert dotenv == "[]"
    assert built.strip() == "False"


def test_producers_never_import_the_simulator_or_tasks_and_tasks_never_import_producers() -> None:
    for folder, banned in (
        ("producers", "simulator"),
        ("producers", "tasks"),
        ("tasks", "producers"),
    ):
        for path in (REPO / folder).rglob("*.py"):
            for line in path.read_text().splitlines():
                words = line.split()
                if words[:1] in (["import"], ["from"]) and len(words) > 1:
                    assert not words[1].startswith(banned), f"{path}: {line}"
