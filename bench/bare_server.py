"""The Python floor: a bare single-threaded ``selectors`` server speaking the same protocol.

One JSON-RPC 2.0 request per ``\\n``-terminated line on a Unix socket, the reply
written back on the same connection; no validation, no worker threads, no
logging. Without ``--orm`` every method answers a constant (the transport's
floor). With ``--orm``, ``bench.lookup`` runs the same ORM lookup as the
socketsvc handler, between two ``close_old_connections()`` calls, which is
what Django does around an HTTP request::

    python bench/bare_server.py --socket /tmp/x/bare.sock [--orm]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _floor(params: Any) -> str:
    return "pong"


def _orm_lookup() -> Callable[[Any], str]:
    """Set Django up and return the lookup wrapped in Django's request-cycle hygiene."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.db import close_old_connections

    from bench.handlers import lookup

    def run(params: Any) -> str:
        close_old_connections()
        try:
            return lookup(**params)
        finally:
            close_old_connections()

    return run


class BareServer:
    """Accept, read lines, answer each in turn; nothing else."""

    def __init__(self, path: str, work: Callable[[Any], str]) -> None:
        self.work = work
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.buffers: dict[socket.socket, bytearray] = {}

    def serve_forever(self) -> None:
        """Serve until the process is terminated."""
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            self.buffers[sock] = bytearray()
            self.selector.register(sock, selectors.EVENT_READ, True)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(sock)
            del self.buffers[sock]
            sock.close()
            return
        buffer = self.buffers[sock]
        buffer += data
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            sock.setblocking(True)
            sock.sendall(self._answer(line))
            sock.setblocking(False)

    def _answer(self, line: bytes) -> bytes:
        request = json.loads(line)
        try:
            reply: dict[str, Any] = {"result": self.work(request.get("params") or {})}
        except Exception as exc:
            reply = {"error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
        return json.dumps({"jsonrpc": "2.0", "id": request.get("id"), **reply}).encode() + b"\n"


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--orm", action="store_true", help="run the ORM lookup")
    options = parser.parse_args()
    work = _orm_lookup() if options.orm else _floor
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = BareServer(options.socket, work)
    try:
        server.serve_forever()
    finally:
        os.unlink(options.socket)


if __name__ == "__main__":
    main()
