"""Starting a worker process, and hearing what it says: the master's two links to a worker.

A worker is a fresh interpreter running ``python -m django runsocketservice``
(nothing of the master's is inherited but the listening socket, passed by
number): its settings module and the project's import path come through the
environment, with ``SOCKETSVC_WORKER`` (:mod:`socketsvc.process.worker`). Its
``sd_notify`` messages come back on the master's :class:`Inbox`, a datagram
socket that learns each sender's pid from the kernel (``SCM_CREDENTIALS``),
so only the master's own workers are listened to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from socketsvc.process.worker import ENVIRONMENT, WorkerInfo

# The worker's command: the same Django project, its settings from the environment.
_WORKER_MAIN = ("-m", "django", "runsocketservice")
_CREDENTIALS = struct.Struct("3i")
# Variables that belong to the master (systemd's), never to a worker.
_MASTERS_OWN = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID")


@dataclass
class Worker:
    """One worker process the master started, and where it stands."""

    slot: int
    process: subprocess.Popen[bytes]
    started: float
    ready: bool = False
    last_ping: float = 0.0
    successor: Worker | None = None
    replaces: Worker | None = None
    retired_at: float = 0.0  # when it was told to drain (0: serving)
    databases_down: tuple[str, ...] = ()  # the aliases it last reported unreachable
    killed: bool = False

    @property
    def retiring(self) -> bool:
        """Return True once it was told to drain."""
        return self.retired_at > 0

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.process.pid


def exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def project_path() -> str:
    """Return sys.path entries outside the interpreter's own, for the workers' PYTHONPATH."""
    kinds = ("stdlib", "platstdlib", "purelib", "platlib")
    roots = {os.path.abspath(sysconfig.get_path(kind)) for kind in kinds}
    entries = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)
        if os.path.isdir(path) and not any(_inside(path, root) for root in roots):
            entries.append(path)
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join([*dict.fromkeys(entries), *([inherited] if inherited else [])])


def settings_module() -> str:
    """Return the settings module the workers load; raise if there is none to pass on."""
    from django.conf import settings

    # Inside override_settings (a test) SETTINGS_MODULE reads None: the environment
    # still names the module that was loaded.
    name = getattr(settings, "SETTINGS_MODULE", None) or os.environ.get("DJANGO_SETTINGS_MODULE")
    if not name:
        raise ImproperlyConfigured(
            "worker processes need a settings module (DJANGO_SETTINGS_MODULE): "
            "settings.configure() cannot be passed to a new process"
        )
    return str(name)


def worker_environment(
    info: WorkerInfo, notify_path: str, watchdog_usec: int, settings: str
) -> dict[str, str]:
    """Return the environment of a worker process."""
    env = {key: value for key, value in os.environ.items() if key not in _MASTERS_OWN}
    env.update(
        {
            ENVIRONMENT: info.encode(),
            "NOTIFY_SOCKET": notify_path,
            "WATCHDOG_USEC": str(watchdog_usec),
            "DJANGO_SETTINGS_MODULE": settings,
            "PYTHONPATH": project_path(),
        }
    )
    return env


def start_process(
    info: WorkerInfo, env: dict[str, str], args: list[str]
) -> subprocess.Popen[bytes]:
    """Start a worker process with the listening socket (and nothing else) passed to it."""
    return subprocess.Popen(
        [sys.executable, *_WORKER_MAIN, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        pass_fds=(info.fd,),
        # Its own process group: a terminal's Ctrl-C reaches the master alone,
        # which drains the workers in order.
        process_group=0,
    )


class Inbox:
    """The master's notify socket: ``KEY=VALUE`` datagrams, each with its sender's pid."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        """Return the descriptor the master's selector watches."""
        return self.sock.fileno()

    def receive(self) -> Iterator[tuple[int, list[str]]]:
        """Yield (sender pid, fields) for each datagram waiting (at most 256 a turn)."""
        for _ in range(256):
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(_CREDENTIALS.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDENTIALS.unpack(payload[: _CREDENTIALS.size])[0]
            yield pid, data.decode(errors="replace").split("\n")

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
