"""One client socket: non-blocking reads into a line framer, buffered writes, pausable reading.

Like asyncio's ``_SelectorSocketTransport``, a :class:`Transport` knows bytes
and its socket's interest in the selector, nothing about requests. The loop
tells it whether it may read (:meth:`Transport.want_reading`); it asks for
write readiness itself while it holds unsent bytes.
"""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import threading
import time
from typing import Any, NamedTuple

from socketsvc.protocol import LineFramer

# struct ucred: pid_t (signed), uid_t and gid_t (unsigned).
_PEERCRED = struct.Struct("iII")
# <asm-generic/socket.h>; the socket module has no name for it.
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_FEW_GROUPS, _MAX_GROUPS = 64, 65536  # NGROUPS_MAX is 65536
_READ_CHUNK = 65536


class Peer(NamedTuple):
    """The process at the other end, as the kernel saw it at ``connect()``."""

    pid: int
    uid: int
    gid: int


UNKNOWN_PEER = Peer(-1, -1, -1)


def peer_of(sock: socket.socket) -> Peer:
    """Return the peer's credentials (``SO_PEERCRED``)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return UNKNOWN_PEER
    return Peer(*_PEERCRED.unpack(raw))


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """Return the peer's supplementary groups as the kernel saw them at ``connect()``.

    ``SO_PEERGROUPS`` (Linux 4.13+) fills a buffer of gid_t; it fails with
    ERANGE when the buffer is too small, so a peer in very many groups costs a
    second call. Empty when the kernel cannot tell (the peer is then judged by
    its uid and primary gid alone).
    """
    for count in (_FEW_GROUPS, _MAX_GROUPS):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, count * 4)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue
            return frozenset()
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return frozenset()


class Transport:
    """A connected client socket registered with the loop's selector."""

    __slots__ = (
        "_owner",
        "_selector",
        "closed",
        "eof",
        "events",
        "framer",
        "last_active",
        "lock",
        "out",
        "sock",
    )

    def __init__(
        self,
        sock: socket.socket,
        selector: selectors.BaseSelector,
        max_bytes: int,
        owner: Any,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.framer = LineFramer(max_bytes)
        self.out = bytearray()
        self.events = 0
        self.eof = False
        self.closed = False
        self.last_active = time.monotonic()
        # Held while bytes go out or the socket closes: the loop writes, and so does a
        # worker thread with a reply for a connection that has nothing queued (send_now).
        self.lock = threading.Lock()
        self._selector = selector
        self._owner = owner  # the selector key's data: whom the loop hands events to

    def read(self) -> list[bytes] | None:
        """Read what is there; return the complete lines, or None at end of stream.

        Raises MessageTooLarge (from the framer) when a line outgrows its limit,
        and OSError when the peer is gone.
        """
        try:
            data = self.sock.recv(min(_READ_CHUNK, self.framer.room()))
        except (BlockingIOError, InterruptedError):
            return []
        self.last_active = time.monotonic()
        if not data:
            self.eof = True
            return None
        return self.framer.feed(data)

    def has_unread_data(self) -> bool:
        """Return True if the peer sent bytes not read yet."""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False

    def write(self, data: bytes) -> bool:
        """Queue *data* and send what the socket takes now; False if the peer is gone."""
        with self.lock:
            if self.closed:
                return False
            self.out += data
            return self._flush()

    def flush(self) -> bool:
        """Send buffered bytes until the socket would block; False if the peer is gone."""
        with self.lock:
            return self.closed or self._flush()

    def _flush(self) -> bool:
        out = self.out
        while out:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return False
            del out[:sent]
        self.last_active = time.monotonic()
        return True

    def send_now(self, data: bytes) -> bool:
        """From a worker thread: send *data* at once if nothing is queued before it.

        Returns True if the socket took it (what it did not take is queued, and
        the loop, told of the reply next, asks to write the rest); False if it
        was not sent at all (bytes queued before it, the socket full or closed,
        the peer gone): the loop then sends it as any other reply.
        """
        with self.lock:
            if self.closed or self.out:
                return False
            try:
                sent = self.sock.send(data)
            except OSError:
                return False
            if sent < len(data):
                self.out += data[sent:]
            self.last_active = time.monotonic()
            return True

    def want_reading(self, reading: bool) -> None:
        """Set the selector interest: read if *reading*, write while bytes wait to be sent."""
        if self.closed:
            return
        events = selectors.EVENT_READ if reading and not self.eof else 0
        if self.out:
            events |= selectors.EVENT_WRITE
        if events == self.events:
            return
        if self.events == 0:
            self._selector.register(self.sock, events, self._owner)
        elif events == 0:
            self._selector.unregister(self.sock)
        else:
            self._selector.modify(self.sock, events, self._owner)
        self.events = events

    def close(self) -> None:
        """Unregister and close the socket (idempotent)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.events:
                self._selector.unregister(self.sock)
                self.events = 0
            self.sock.close()
