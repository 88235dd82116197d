"""A TCP proxy a test controls: cut one process off from Redis while others still reach it."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable
from typing import cast


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; :meth:`cut` drops every connection and
    refuses new ones (the peer sees resets), :meth:`restore` accepts again; after
    :meth:`stall`, what the server sends is dropped while the client's bytes still flow (a
    replica behind it stays connected, and its primary counts it, but receives nothing)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._marker: bytes | None = None
        self.tripped = threading.Event()
        self.stalled = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def cut_after(self, marker: bytes) -> None:
        """Arm a cut: the first chunk the server sends that contains ``marker`` is passed on
        to the client, then :meth:`cut` runs (``tripped`` is set). A reply delivered, and the
        connection gone before the client's next command: a primary dying at that instant."""
        self.tripped.clear()
        self._marker = marker

    def _on_reply(self, data: bytes) -> None:
        marker = self._marker
        if marker is not None and marker in data:
            self._marker = None
            self.cut()
            self.tripped.set()

    def restore(self) -> None:
        self._open.set()

    def stall(self) -> None:
        self.stalled.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()  # refused while cut
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(
                target=_pump, args=(client, upstream, self._on_reply, self.stalled), daemon=True
            ).start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pump(
    a: socket.socket,
    b: socket.socket,
    on_reply: Callable[[bytes], None],
    stalled: threading.Event,
) -> None:
    """Copy bytes both ways until either side closes; ``on_reply`` sees what ``b`` (the
    server) sent, after it was passed on; while ``stalled`` is set, what ``b`` sends is
    dropped."""
    peers = {a: b, b: a}
    with selectors.DefaultSelector() as selector:
        for sock in peers:
            sock.setblocking(True)
            selector.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select(timeout=1):
                sock = cast(socket.socket, key.fileobj)
                try:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError("closed")
                    if sock is b and stalled.is_set():
                        continue  # lost on the way
                    peers[sock].sendall(data)
                    if sock is b:
                        on_reply(data)
                except OSError:
                    for s in peers:
                        with contextlib.suppress(OSError):
                            s.close()
                    return
