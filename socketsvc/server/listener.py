"""The listening socket: bound here safely, or inherited from systemd; closed exactly once.

A :class:`Listener` is what the event loop accepts on. Closing it (at the
start of a drain, and again at exit) is idempotent: the socket, the lock and
the socket file are each let go of once, so a descriptor number reused by an
unrelated file in between is never closed by mistake.

Binding rules, for a socket this process binds itself:

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

from socketsvc.systemd import ActivationError, activated_socket


class ListenerError(Exception):
    """The socket could not be bound or taken over; the message says why and what to do."""


class Listener:
    """A listening Unix socket, and how to let go of it (see the module docstring)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        activated: bool,
        path: str | None = None,
        lock_fd: int | None = None,
        inode: int | None = None,
        shared: bool = False,
    ) -> None:
        self.sock = sock
        self.activated = activated
        self.path = path
        self._lock_fd = lock_fd
        self._inode = inode
        self._closed = False
        # Several worker processes accept on this socket (the event loop then
        # waits on it with EPOLLEXCLUSIVE: a connection wakes one of them).
        self.shared = shared
        sock.setblocking(False)

    def describe(self, configured: str) -> str:
        """Name the socket for the log: the *configured* path, or whose it is if passed in."""
        if not self.activated:
            return configured
        try:
            path = self.sock.getsockname()
        except OSError:
            path = ""
        name = path if isinstance(path, str) and path else "(unnamed)"
        return f"{name} (the master's)" if self.shared else f"{name} (from systemd)"

    @classmethod
    def inherited(cls, fd: int) -> Listener:
        """Return the listening socket a master passed as *fd*, shared with its other workers.

        Closing it closes this process's descriptor only: never the file, never a lock.
        """
        os.set_inheritable(fd, False)  # not into processes a handler starts
        return cls(socket.socket(fileno=fd), activated=True, shared=True)

    @classmethod
    def acquire(
        cls,
        path: str,
        mode: int = 0o660,
        group: str | int | None = None,
        backlog: int = 128,
        activation_name: str | None = None,
    ) -> Listener:
        """Take the socket systemd passed, or bind *path*; raise ListenerError with the reason."""
        try:
            sock = activated_socket(activation_name)
        except ActivationError as exc:
            raise ListenerError(str(exc)) from None
        if sock is not None:
            # systemd (or another manager) owns the socket file: never unlink it.
            return cls(sock, activated=True)
        return bind_unix_socket(path, mode, group, backlog)

    @property
    def closed(self) -> bool:
        """Return True once :meth:`close` ran."""
        return self._closed

    def fileno(self) -> int:
        """Return the listening socket's descriptor."""
        return self.sock.fileno()

    def preserved_fds(self) -> list[int]:
        """Return the descriptors that must survive daemonizing."""
        fds = [self.sock.fileno()]
        return fds if self._lock_fd is None else [*fds, self._lock_fd]

    def group(self) -> int | None:
        """Return the gid owning the socket file (the default allowed group)."""
        try:
            name = self.sock.getsockname()
        except OSError:
            return None
        if not isinstance(name, str) or not name:
            return None
        try:
            return os.stat(name).st_gid
        except OSError:
            return None

    def close(self) -> None:
        """Stop listening, remove the file if it is still ours, release the lock; once only."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.path is not None and self._inode is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
        if self._lock_fd is not None:
            lock_fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                os.close(lock_fd)


def _resolve_group(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenerError(f"socket group {group!r} does not exist") from None


def _take_lock(path: str) -> int:
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ListenerError(f"cannot open lock file {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ListenerError(
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
        raise ListenerError(
            f"socket path {path} exists and is not a socket; remove it or choose another --socket"
        )
    if _answers(path):
        raise ListenerError(
            f"a process that does not hold {path}.lock is serving {path}; "
            "stop it first or choose another --socket"
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def bind_unix_socket(
    path: str, mode: int = 0o660, group: str | int | None = None, backlog: int = 128
) -> Listener:
    """Create, lock and listen on the Unix socket at *path*; raise ListenerError with the reason."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ListenerError(
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
            raise ListenerError(f"cannot bind {path}: {reason}") from None
        finally:
            os.umask(old_umask)
        inode = os.lstat(path).st_ino
        if gid != -1:
            os.chown(path, -1, gid)
        sock.listen(backlog)
    except BaseException:
        os.close(lock_fd)
        raise
    return Listener(sock, activated=False, path=path, lock_fd=lock_fd, inode=inode)
