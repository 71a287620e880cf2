"""One client connection's request state, and the collector that turns a batch into one reply."""

from __future__ import annotations

import collections
import selectors
import socket

from socketsvc import protocol
from socketsvc.server.transport import Transport, peer_of


class Connection:
    """What the loop tracks for one client beyond bytes: messages held, calls in flight."""

    __slots__ = (
        "admitted",
        "batches",
        "closing",
        "held",
        "id",
        "partial_since",
        "peer",
        "pending",
        "requests",
        "transport",
    )

    def __init__(
        self, conn_id: int, sock: socket.socket, selector: selectors.BaseSelector, max_bytes: int
    ) -> None:
        self.id = conn_id
        # The selector hands this connection's events to the loop with the connection itself.
        self.transport = Transport(sock, selector, max_bytes, owner=self)
        self.peer = peer_of(sock)
        self.admitted = False  # passed the access policy and the per-uid limit
        # Messages read but not yet handled because the worker queue was full;
        # while any are held, nothing more is read from this connection.
        self.held: collections.deque[protocol.Message] = collections.deque()
        self.pending = 0  # calls of this connection queued or running
        self.requests = 0  # messages handled
        self.batches = 0  # batches waiting for members' replies
        self.closing = False  # reads nothing more; closes once its output is out
        # When the unterminated line now in the buffer began arriving.
        self.partial_since: float | None = None

    @property
    def closed(self) -> bool:
        """Return True once the socket is closed."""
        return self.transport.closed

    @property
    def idle(self) -> bool:
        """Return True if nothing is held, in flight, or waiting to be sent."""
        return self.pending == 0 and not self.transport.out and not self.batches and not self.held

    @property
    def quiet(self) -> bool:
        """Return True if idle and no partial request is buffered."""
        return self.idle and self.transport.framer.pending == 0


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
