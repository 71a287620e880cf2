"""Socket activation without systemd: hold a listening socket, exec daemons with it as fd 3.

This is what systemd does for ``Accept=no`` socket units: the manager binds
and listens, and each service process it starts finds the socket at fd 3 with
``LISTEN_FDS=1`` and ``LISTEN_PID`` set to its own pid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.daemon import REPO, Daemon

# Runs in the child: move the inherited fd to 3, name this pid, exec the daemon.
_EXEC_WITH_FD3 = """
import os, sys
fd = int(os.environ.pop("ACTIVATION_FD"))
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = "socketsvc"
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


class Activator:
    """A parent that owns the listening socket and starts daemons on it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o660)
        self.sock.listen(256)

    def spawn(self, env: dict[str, str], *args: str, wait: bool = True) -> Daemon:
        """Start a daemon that inherits the socket (as systemd would)."""
        daemon = ActivatedDaemon(self, env, *args)
        return daemon.start(wait=wait)

    def close(self) -> None:
        self.sock.close()


class ActivatedDaemon(Daemon):
    """A Daemon started through an Activator instead of binding its own socket."""

    def __init__(self, activator: Activator, env: dict[str, str], *args: str) -> None:
        super().__init__(activator.path, env, *args)
        self.activator = activator

    def start(self, wait: bool = True) -> ActivatedDaemon:
        fd = self.activator.sock.fileno()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _EXEC_WITH_FD3,
                    "manage.py",
                    "runsocketservice",
                    *self.args,
                ],
                cwd=REPO,
                env={**self.env, "ACTIVATION_FD": str(fd)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
            )
        if wait:
            self.wait_ready()
        return self


def activator_for(tmp: Path) -> Activator:
    return Activator(str(tmp / "act.sock"))
