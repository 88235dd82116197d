"""Headless Chromium (the Debian package) for looking at a web page as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def install_chromium(timeout: float = 900) -> str:
    """``chromium`` on PATH, installed with apt-get when missing.

    Returns its path, or raises RuntimeError saying why it cannot be installed here.
    """
    found = find_chromium()
    if found:
        return found
    if not shutil.which("apt-get"):
        raise RuntimeError("chromium is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise RuntimeError("chromium is not installed and installing it needs root (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{' '.join(argv)} failed: {' / '.join(tail)}")
    found = find_chromium()
    if not found:
        raise RuntimeError("apt-get installed chromium but it is not on PATH")
    return found


def dump_dom(
    binary: str, url: str, profile: Path, budget_ms: int = 8000, timeout: float = 60
) -> str:
    """The page's DOM after ``budget_ms`` of virtual time (its scripts and AJAX have run)."""
    argv = [
        binary,
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this is a CI run (``CI=true``, as GitHub Actions, GitLab and most set it)."""
    return environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def chromium_or_skip(
    install: Callable[[], str] = install_chromium, environ: Mapping[str, str] = os.environ
) -> str:
    """Chromium for a browser test. Where it cannot be installed the test is skipped, except
    in CI, where the browser can always be installed: there the test fails instead, so that a
    broken install cannot turn the browser check into a quiet skip."""
    try:
        return install()
    except RuntimeError as exc:
        reason = f"headless Chromium cannot be installed here: {exc}"
        if in_ci(environ):
            pytest.fail(f"{reason} (CI=true: a skip would hide the browser test)")
        pytest.skip(reason)
