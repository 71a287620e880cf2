"""Bind the listening Unix socket safely, and unbind it on exit.

* One instance per path: a ``flock`` on ``<path>.lock`` is held for the life of
  the process (the kernel drops it when the process dies, however it dies).
* A path that exists and is not a socket is refused, never removed.
* A socket file is removed only when no live instance answers on it.
* The socket is created under a umask that gives it its configured mode from
  the moment it exists; there is no bind-then-chmod window.
* On exit the socket is unlinked only if it is still the one this process made.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import socket
import stat
from dataclasses import dataclass


class BindError(Exception):
    """The socket could not be bound; the message says why and what to do."""


@dataclass
class BoundSocket:
    """A listening socket this process created, with the lock that guards its path."""

    sock: socket.socket
    path: str
    lock_fd: int
    inode: int

    def close(self) -> None:
        """Close the listener and remove its file if it is still ours."""
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)


def _resolve_group(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise BindError(f"socket group {group!r} does not exist") from None


def _take_lock(path: str) -> int:
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BindError(f"cannot open lock file {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise BindError(
            f"another socketsvc instance (pid {holder}) is already serving {path}; "
            "stop it first or choose another --socket"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _answers(path: str) -> bool:
    """Return True if something accepts connections on the socket at *path*."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def _clear_stale(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise BindError(
            f"socket path {path} exists and is not a socket; remove it or choose another --socket"
        )
    if _answers(path):
        raise BindError(
            f"a process that does not hold {path}.lock is serving {path}; "
            "stop it first or choose another --socket"
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def bind_unix_socket(
    path: str, mode: int = 0o660, group: str | int | None = None, backlog: int = 128
) -> BoundSocket:
    """Create, lock and listen on the Unix socket at *path*; raise BindError with the reason."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise BindError(
            f"directory {directory} for socket {path} does not exist; create it "
            "(owned by the service user, not world-writable) or choose another --socket"
        )
    gid = _resolve_group(group)
    lock_fd = _take_lock(path)
    try:
        _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(~mode & 0o777)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            reason = "permission denied" if exc.errno == errno.EACCES else exc.strerror
            raise BindError(f"cannot bind {path}: {reason}") from None
        finally:
            os.umask(old_umask)
        inode = os.lstat(path).st_ino
        if gid != -1:
            os.chown(path, -1, gid)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        os.close(lock_fd)
        raise
    return BoundSocket(sock, path, lock_fd, inode)
