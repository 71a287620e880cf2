"""One client connection's state, and the collector that turns a batch into one reply."""

from __future__ import annotations

import collections
import socket
import struct
import time

from . import protocol

_PEERCRED = struct.Struct("3i")


class Connection:
    """One client: its socket, peer credentials, buffers and in-flight count."""

    __slots__ = (
        "admitted",
        "batches",
        "closed",
        "closing",
        "eof",
        "events",
        "framer",
        "gid",
        "held",
        "id",
        "last_active",
        "out",
        "partial_since",
        "pending",
        "pid",
        "requests",
        "sock",
        "uid",
    )

    def __init__(self, conn_id: int, sock: socket.socket, max_bytes: int) -> None:
        self.id = conn_id
        self.sock = sock
        self.admitted = False  # passed the access policy and the per-uid limit
        self.framer = protocol.LineFramer(max_bytes)
        self.out = bytearray()
        # Messages read but not yet handled because the worker queue was full;
        # while any are held, nothing more is read from this connection.
        self.held: collections.deque[protocol.Message] = collections.deque()
        self.pending = 0
        self.requests = 0  # messages handled
        self.batches = 0
        self.eof = False
        self.closing = False
        self.closed = False
        self.events = 0
        self.last_active = time.monotonic()
        # When the unterminated line now in the buffer began arriving.
        self.partial_since: float | None = None
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            self.pid, self.uid, self.gid = _PEERCRED.unpack(raw)
        except OSError:
            self.pid = self.uid = self.gid = -1

    @property
    def idle(self) -> bool:
        """Return True if nothing is held, in flight, or waiting to be sent."""
        return self.pending == 0 and not self.out and not self.batches and not self.held

    @property
    def quiet(self) -> bool:
        """Return True if idle and no partial request is buffered."""
        return self.idle and self.framer.pending == 0


class BatchReply:
    """Collects the replies of one batch and sends them as one array when complete."""

    __slots__ = ("remaining", "replies")

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.replies: list[bytes] = []

    def add(self, reply: bytes | None) -> bytes | None:
        """Record one member's reply (None: a notification); return the batch reply when complete.

        The completed reply is ``b""`` when every member was a notification.
        """
        if reply:
            self.replies.append(reply.rstrip(b"\n"))
        self.remaining -= 1
        if self.remaining:
            return None
        if not self.replies:
            return b""
        return b"[" + b",".join(self.replies) + b"]\n"
