"""Socket activation without systemd: hold a listening socket, start daemons on it as fd 3.

This is what systemd does for ``Accept=no`` socket units: the manager binds
and listens, and each service process it starts finds the socket at fd 3 with
``LISTEN_FDS=1`` and ``LISTEN_PID`` set to its own pid.
"""

from __future__ import annotations

import os
import socket


class Activator:
    """A parent that owns the listening socket; a daemon given ``activation=`` it inherits it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o660)
        self.sock.listen(256)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
