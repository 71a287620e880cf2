"""What systemd listens on for ``sd_notify``, for tests that play systemd."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

# struct ucred: pid, uid, gid.
_CREDENTIALS = struct.Struct("3i")


class NotifySocket:
    """What systemd listens on: a datagram socket collecting KEY=VALUE messages.

    Like systemd, it learns each sender's pid from the kernel (``SCM_CREDENTIALS``):
    :attr:`senders` lists them, so a test can hold the daemon to ``NotifyAccess=main``
    (only the process systemd started may speak; the suite's fixture checks it).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        self.senders: set[int] = set()

    def receive(self, timeout: float) -> list[str] | None:
        """Return the fields of the next datagram, or None if none came within *timeout*."""
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS.size))
        except (TimeoutError, BlockingIOError):  # BlockingIOError: a timeout of 0
            return None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                self.senders.add(_CREDENTIALS.unpack(payload[: _CREDENTIALS.size])[0])
        return data.decode().split("\n")

    def wait_for(self, field: str, timeout: float = 30.0) -> list[list[str]]:
        """Collect datagrams until one holds *field*; return all of them."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = self.receive(deadline - time.monotonic())
            if fields is None:
                break
            seen.append(fields)
            if field in fields:
                return seen
        raise AssertionError(f"no {field} within {timeout} s; got {seen}")

    def wait_for_prefix(self, prefix: str, timeout: float = 30.0, collect: bool = False) -> Any:
        """Return the first datagram with a field starting with *prefix* (with *collect*,
        every datagram up to and including it)."""
        seen = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            fields = self.receive(left)
            if fields is None:
                continue
            seen.append(fields)
            if any(field.startswith(prefix) for field in fields):
                return seen if collect else fields
        raise AssertionError(f"no {prefix}... within {timeout} s")

    def close(self) -> None:
        self.sock.close()
