"""An HTTP proxy in front of the simulator's REST API that a test makes fail or slow down.

The producer's ``ALPACA_TRADING_API_URL`` points here; every request is passed on to the
simulator unchanged unless the test asked for errors (each request answered ``status`` with
Alpaca's error body) or for slow answers (each answer held back ``delay`` seconds).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: The request headers passed on (alpaca-py's credentials and what it accepts).
FORWARDED = ("APCA-API-KEY-ID", "APCA-API-SECRET-KEY", "Accept", "Content-Type", "User-Agent")


class RestProxy:
    """Forwards ``http://127.0.0.1:port`` to ``target`` (``http://host:port``)."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.error_status: int | None = None
        self.delay = 0.0
        self.requests = 0
        self.failed = 0
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="rest-proxy").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, status: int = 500) -> None:
        """Answer every request with ``status`` until :meth:`heal`."""
        self.error_status = status

    def slow(self, delay: float) -> None:
        """Hold every answer back ``delay`` seconds until :meth:`heal`."""
        self.delay = delay

    def heal(self) -> None:
        self.error_status = None
        self.delay = 0.0

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        """(status, body, content type) for one GET of ``path``."""
        self.requests += 1
        delay, status = self.delay, self.error_status
        if delay:
            self._closing.wait(delay)
        if status is not None:
            self.failed += 1
            body = {"code": status * 100_000, "message": "internal server error (injected)"}
            return status, json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.target + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), _content_type(response)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), _content_type(error)


def _content_type(response: Any) -> str:
    return str(response.headers.get("Content-Type", "application/json"))


def _handler(proxy: RestProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            headers = {k: v for k in FORWARDED if (v := self.headers.get(k)) is not None}
            try:
                status, body, content_type = proxy.answer(self.path, headers)
            except OSError as exc:  # the simulator is gone (teardown)
                status, body, content_type = 502, str(exc).encode(), "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: a chaos run makes thousands of requests."""

    return Handler
