"""The one channel from other threads to the event loop: a callback queue and its wake-up pipe.

Worker threads (and the readiness probe) never touch the
loop's state: they :meth:`Handback.put` a callback, and the loop runs it on
its own thread. (The one socket operation a worker does is sending its reply
when nothing is queued before it, under the transport's lock: see
:meth:`socketsvc.server.transport.Transport.send_now`.) One byte on a socketpair
wakes the selector; while
a byte is already on its way no more are written, so a burst of results costs
one wake-up.
"""

from __future__ import annotations

import collections
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class Handback:
    """Callbacks queued from any thread, run by the loop (like gunicorn's PollableMethodQueue)."""

    def __init__(self) -> None:
        self._calls: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = False
        self._closed = False

    def fileno(self) -> int:
        """Return the descriptor the loop watches for reading."""
        return self._reader.fileno()

    def put(self, callback: Callable[..., None], *args: Any) -> None:
        """Queue ``callback(*args)`` for the loop and wake it (safe from any thread)."""
        self._calls.append((callback, args))
        if self._pending:
            return
        self._pending = True
        with contextlib.suppress(BlockingIOError, OSError):
            self._writer.send(b"\0")

    def run_pending(self) -> None:
        """Run every queued callback (loop thread only); one failing never stops the others."""
        # One read takes every wake-up byte there is (put() sends one per burst);
        # reading on until the socket says "would block" costs an exception per turn.
        with contextlib.suppress(BlockingIOError, OSError):
            self._reader.recv(4096)
        # Cleared before the queue is read: a put() that still sees it set has
        # its callback run below; one that sees it clear sends a new byte.
        self._pending = False
        calls = self._calls
        while calls:
            callback, args = calls.popleft()
            try:
                callback(*args)
            except Exception:
                log.exception(
                    "handback_callback_failed", callback=getattr(callback, "__name__", "?")
                )

    def close(self) -> None:
        """Close the pipe (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._reader.close()
        self._writer.close()
