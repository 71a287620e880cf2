"""A gate the test holds shut: handlers wait at it until the test opens it, with no sleeps.

A handler (``testapp.hold``) connects to the gate's Unix socket and blocks
reading one byte. The test learns each arrival by accepting it, so it knows
exactly when N handlers are inside, and :meth:`Gate.open` lets them all go.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path


class Gate:
    """A listening Unix socket; every connection is a handler waiting to be let through."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(64)
        self._waiting: list[socket.socket] = []
        self.arrived = 0

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        """Return once *count* handlers have arrived since the gate was made; fail after *timeout*."""
        self._listener.settimeout(timeout)
        while self.arrived < count:
            conn, _ = self._listener.accept()
            self._waiting.append(conn)
            self.arrived += 1

    def open(self) -> None:
        """Let every handler that arrived go on (later ones wait for the next open())."""
        for conn in self._waiting:
            with contextlib.suppress(OSError):  # its daemon may be gone
                conn.sendall(b"x")
            conn.close()
        self._waiting.clear()

    def close(self) -> None:
        """Let everyone through and stop listening."""
        self.open()
        self._listener.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
