"""``alpaca-broker bench`` and ``demo`` from the wheel, installed into a fresh virtualenv and
run from a directory outside the checkout: every child process comes from the installed
package, none from the source tree.

The virtualenv gets the project's dependencies by a path line pointing at this
environment's site-packages (no download, and no ``.pth`` of that environment is read, so
the editable install's path to the checkout stays out); the package itself is the wheel.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

from tests.harness.wait import wait_until
from tests.harness.workers import REPO

pytestmark = pytest.mark.slow

NOT_SOURCES = shutil.ignore_patterns(
    ".*", "__pycache__", "*.egg-info", "build", "dist", "bench-out", "docs"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh virtualenv with the wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building in the checkout would leave build/ there
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    (source / "docs").mkdir()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = [*pip, "wheel", "--no-deps", "-w", str(root), str(source)]
    subprocess.run(build, check=True, timeout=180)
    wheel = next(root.glob("alpaca_broker-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (purelib / "project-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = venv / "bin" / "python"
    install = [*pip, "--python", str(python), "install", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, timeout=180)
    return venv / "bin"


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working directory outside the checkout and an environment that knows no checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ALPACA_", "APCA_", "CELERY_", "REDIS_", "PYTHON", "VIRTUAL_ENV"))
    }
    return tmp_path, {**env, "FLOWER_BASIC_AUTH": "demo:demo-pass"}


def test_the_package_is_imported_from_the_wheel_not_the_checkout(
    installed: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    code = "import producers, simulator, benchmarks; print(producers.__file__, benchmarks.__file__)"
    done = subprocess.run(
        [installed / "python", "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for path in done.stdout.split():
        assert Path(path).is_relative_to(installed.parent), path
        assert not Path(path).is_relative_to(REPO), path


def test_bench_from_the_wheel_outside_the_checkout_runs_every_design(
    installed: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    argv = [str(installed / "alpaca-broker"), "bench", "--rates", "5000"]
    short = ["--duration", "1", "--warmup", "1"]
    done = subprocess.run(
        [*argv, *short], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for design in ("pipeline", "naive", "direct"):
        # Columns: design, offered/s, path, ingest/s, events/s (what reached the channels).
        row = re.search(rf"^\s*{design}\s+5000\s+prices\s+\d+\s+(\d+)", done.stdout, re.MULTILINE)
        assert row, done.stdout
        assert int(row.group(1)) > 0, done.stdout
    assert (cwd / "bench-out" / "bench.json").exists()


def test_demo_from_the_wheel_in_a_terminal_redraws_its_status_line_and_stops_on_ctrl_c(
    installed: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    primary, secondary = pty.openpty()
    demo = subprocess.Popen(
        [installed / "alpaca-broker", "demo", "--flower-port", "0", "--interval", "1"],
        cwd=cwd, env=env, stdin=secondary, stdout=secondary, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal closed: every process on it exited
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def text() -> str:
        return screen.decode(errors="replace")

    try:
        flowing = re.compile(r"prices connected [1-9][\d,]*/s")
        wait_until(lambda: len(flowing.findall(text())) >= 2, 90, interval=0.2, message=text())
        demo.send_signal(signal.SIGINT)
        assert demo.wait(40) == 0, text()
    finally:
        if demo.poll() is None:
            demo.kill()
    reader.join(10)
    os.close(primary)
    status = text().split("Watch:", 1)[1].split("\x1b[K")[1:]
    assert len(status) >= 2, text()
    assert all("\n" not in line for line in status[:-1]), status  # redrawn in place
    assert "stopping..." in status[-1]
