"""One request line out and its reply line back, on a Unix socket, within a deadline.

The client's socket work, apart from what it means: connecting (waiting while
the service's backlog is full), sending, reading one reply line, and telling a
request the service never read (safe to send again) from one it may have read
(not safe).

On a Unix socket the kernel tells them apart. A send to a connection the
service has already closed fails (EPIPE), and a connection closed with bytes
still unread in it is reset (ECONNRESET): in both cases the request was never
read. A connection that ends cleanly after the request went out had it read:
the service (a worker process killed while running it) may have acted on it.
"""

from __future__ import annotations

import json
import socket as _socket
import struct
import time

from socketsvc.errors import CallTimeout, ProtocolError, RemoteError, ServiceUnavailable
from socketsvc.protocol import JSONValue

_MAX_REPLY_BYTES = 64 * 1024 * 1024


def connect(path: str, deadline: float) -> _socket.socket:
    """Connect, waiting (until *deadline*) while the service's listen backlog is full.

    A non-blocking connect to a Unix socket whose backlog is full fails at once
    with EAGAIN; a blocking one waits for room, bounded by ``SO_SNDTIMEO``.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    wait = max(deadline - time.monotonic(), 0.001)
    seconds = int(wait)
    sock.setsockopt(
        _socket.SOL_SOCKET,
        _socket.SO_SNDTIMEO,
        struct.pack("ll", seconds, int((wait - seconds) * 1_000_000)),
    )
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise ServiceUnavailable(
            f"socketsvc is not running: no socket at {path}", path, "not_running"
        ) from None
    except ConnectionRefusedError:
        sock.close()
        raise ServiceUnavailable(
            f"socketsvc is not running: connection to {path} refused", path, "refused"
        ) from None
    except PermissionError:
        sock.close()
        raise ServiceUnavailable(
            f"no permission to connect to {path}: this user needs write access to the socket "
            "(add it to the socket's group)",
            path,
            "permission_denied",
        ) from None
    except (TimeoutError, BlockingIOError):
        sock.close()
        raise CallTimeout(f"timed out connecting to {path} (its backlog stayed full)") from None
    except OSError as exc:
        sock.close()
        raise ServiceUnavailable(
            f"cannot connect to {path}: {exc.strerror}", path, "unreachable"
        ) from None
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
    return sock


def refusal(sock: _socket.socket) -> dict[str, JSONValue] | None:
    """Return the error the service sent before closing on us (refused on accept), if any."""
    sock.settimeout(0.5)
    try:
        line = sock.recv(65536).split(b"\n", 1)[0]
        reply = json.loads(line)
    except (OSError, ValueError):
        return None
    if not isinstance(reply, dict) or reply.get("id") is not None:
        return None
    error = reply.get("error")
    return error if isinstance(error, dict) else None


class Unanswered(Exception):
    """The request was never read: the connection was closed before it, or reset with it unread."""


def send(sock: _socket.socket, data: bytes, path: str, deadline: float) -> None:
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    try:
        sock.sendall(data)
    except TimeoutError:
        raise CallTimeout(f"timed out sending to {path}") from None
    except OSError as exc:
        error = refusal(sock)
        if error is not None:
            raise RemoteError.from_error(error) from None
        raise Unanswered(f"connection to {path} lost while sending: {exc.strerror}") from None


def read_reply(sock: _socket.socket, path: str, deadline: float, timeout: float) -> bytes:
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CallTimeout(f"no reply from {path} within {timeout:g} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise CallTimeout(f"no reply from {path} within {timeout:g} s") from None
        except ConnectionResetError:
            # The service closed with our request unread (that is what a reset
            # means on a Unix socket).
            if not buffer:
                raise Unanswered(f"socketsvc at {path} closed the connection unread") from None
            raise ServiceUnavailable(
                f"connection to {path} reset during the reply", path, "lost"
            ) from None
        except OSError as exc:
            raise ServiceUnavailable(
                f"connection to {path} lost while waiting for the reply: {exc.strerror}",
                path,
                "lost",
            ) from None
        if not chunk:
            # A clean end: the service read everything sent, our request included,
            # then closed (its process died while running it). Never sent again.
            raise ServiceUnavailable(
                f"socketsvc at {path} closed the connection before replying", path, "lost"
            )
        newline = chunk.find(b"\n")
        if newline >= 0:
            buffer += chunk[:newline]
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > _MAX_REPLY_BYTES:
            raise ProtocolError(f"reply from {path} exceeds {_MAX_REPLY_BYTES} bytes")
