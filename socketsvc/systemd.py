"""systemd integration in plain stdlib: socket activation and ``sd_notify``. Never raises.

Outside systemd (no ``LISTEN_FDS``, no ``NOTIFY_SOCKET``) everything here is a
no-op, so the daemon behaves the same under any supervisor.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)

SD_LISTEN_FDS_START = 3


class ActivationError(Exception):
    """The inherited file descriptor is not what the daemon can serve on."""


def under_systemd() -> bool:
    """Return True if systemd (or something speaking its protocols) started this process."""
    return any(name in os.environ for name in ("NOTIFY_SOCKET", "LISTEN_PID", "INVOCATION_ID"))


def listen_fds(unset_environment: bool = True) -> list[tuple[int, str]]:
    """Return the (fd, name) pairs passed by socket activation, as sd_listen_fds_with_names(3)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = (os.environ.get("LISTEN_FDNAMES") or "").split(":")
    if unset_environment:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    fds = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        # Keep the socket from leaking into processes the daemon might spawn.
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) and names[index] else "unknown"
        fds.append((fd, name))
    return fds


def activated_socket(name: str | None = None) -> socket.socket | None:
    """Return the activated listening socket, or None when not socket-activated.

    With several fds, *name* (``FileDescriptorName=``) picks one. Raises
    ActivationError if the fd is not a listening Unix stream socket.
    """
    fds = listen_fds()
    if not fds:
        return None
    if len(fds) > 1:
        chosen = [fd for fd, fd_name in fds if fd_name == name]
        if not chosen:
            raise ActivationError(
                f"{len(fds)} sockets were passed ({', '.join(n for _, n in fds)}); set "
                "FileDescriptorName= in the socket unit and SOCKETSVC['ACTIVATION_NAME'] to match"
            )
        fd = chosen[0]
    else:
        fd = fds[0][0]
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(
            f"fd {fd} passed by socket activation is not a socket: {exc}"
        ) from None
    problem = None
    if sock.family != socket.AF_UNIX:
        problem = f"family {sock.family.name}, not AF_UNIX"
    elif sock.type != socket.SOCK_STREAM:
        problem = f"type {sock.type.name}, not SOCK_STREAM (use ListenStream=)"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "not listening (Accept=no is required)"
    if problem is not None:
        sock.detach()
        raise ActivationError(f"fd {fd} passed by socket activation is {problem}")
    sock.setblocking(False)
    return sock


def notify(*fields: str) -> bool:
    """Send ``KEY=VALUE`` fields to ``$NOTIFY_SOCKET``; return False if none, or on failure."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning("sd_notify_failed", error=str(exc))
        return False
    return True


def watchdog_interval() -> float | None:
    """Return seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


class Notifier:
    """The daemon's side of ``Type=notify``: readiness, status, watchdog, stopping."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog = watchdog_interval() if self.enabled else None
        self._next_ping = time.monotonic()
        self._last_status = ""

    def ready(self, status: str) -> None:
        """Tell the manager the service is up."""
        if self.enabled:
            notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        """Tell the manager a reload began (``READY=1`` ends it)."""
        if self.enabled:
            notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, status: str) -> None:
        """Tell the manager the service is shutting down."""
        if self.enabled:
            notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Send ``STATUS=`` when it changed."""
        if self.enabled and status != self._last_status:
            self._last_status = status
            notify(f"STATUS={status}")

    def seconds_to_ping(self, now: float) -> float | None:
        """Return how long the loop may sleep before the next watchdog ping is due."""
        if self.watchdog is None:
            return None
        return max(0.0, self._next_ping - now)

    def ping_if_due(self, now: float) -> None:
        """Send ``WATCHDOG=1`` if due; call it from the main loop only."""
        if self.watchdog is not None and now >= self._next_ping:
            notify("WATCHDOG=1")
            self._next_ping = now + self.watchdog
