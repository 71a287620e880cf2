"""``--daemonize`` for hosts without systemd: detach with python-daemon, keep the pidfile honest.

Under systemd the daemon never forks (a forked main process confuses
``Type=notify``, socket activation and the watchdog); use the units in
``systemd/`` there instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterable
from typing import IO, Any

import structlog

log = structlog.get_logger(__name__)

# Files the daemon creates are not readable by others.
DAEMON_UMASK = 0o027


class PidFileError(Exception):
    """The pidfile names a live process, or cannot be written."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, it is just not ours
    return True


class PidFile:
    """A pidfile written atomically; a stale one (dead pid) is replaced, a live one refused."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def read(self) -> int | None:
        """Return the pid recorded in the file, if there is a readable one."""
        try:
            with open(self.path) as handle:
                return int(handle.read().strip() or "0") or None
        except (FileNotFoundError, ValueError):
            return None

    def check(self) -> None:
        """Raise PidFileError if the file names a live process."""
        pid = self.read()
        if pid is None:
            return
        if pid != os.getpid() and _alive(pid):
            raise PidFileError(
                f"pidfile {self.path} names a running process (pid {pid}); "
                "stop it first or choose another --pidfile"
            )
        log.warning("stale_pidfile_replaced", pidfile=self.path, stale_pid=pid)

    def write(self) -> None:
        """Record this process's pid (write to a temporary name, then rename)."""
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise PidFileError(f"cannot write pidfile {self.path}: {exc.strerror}") from None

    def remove(self) -> None:
        """Remove the file if it still names this process."""
        if self.read() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class DaemonizeUnavailable(OSError):
    """python-daemon is not installed (the ``daemon`` extra)."""


def daemonize(preserve: Iterable[int | IO[Any]], stderr: IO[Any] | None) -> None:
    """Detach into the background, keeping the *preserve* files open; the parent exits 0.

    Call it before any thread starts and with no database connection open.
    """
    try:
        import daemon
    except ImportError:
        raise DaemonizeUnavailable(
            "--daemonize needs python-daemon: pip install 'socketsvc[daemon]' "
            "(under systemd, run in the foreground instead)"
        ) from None

    context = daemon.DaemonContext(
        detach_process=True,
        umask=DAEMON_UMASK,
        working_directory=os.getcwd(),
        files_preserve=list(preserve),
        stdin=None,
        stdout=None,
        stderr=stderr,
        # The server installs its own handlers (drain, reload) after this.
        signal_map={},
        prevent_core=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    context.open()
