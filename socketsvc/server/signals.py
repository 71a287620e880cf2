"""Signals reach the daemon as bytes on a socket, and the event loop acts on them.

``signal.set_wakeup_fd`` makes the C-level handler write each signal's number
to a socket the loop watches, so a signal wakes the selector at once and is
handled on the loop thread, between two events, never in the middle of one.
The Python-level handlers do nothing but stop the default action.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Callable, Iterable
from types import FrameType

import structlog

log = structlog.get_logger(__name__)

# From the master of worker processes: a sibling has a task ready and no idle task thread.
WAKE_SIGNAL = signal.SIGUSR1


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Stop the default action; the loop reads the number from the wake-up socket."""


class SignalWatch:
    """Deliver chosen signals to a callback on the loop thread (main thread only)."""

    def __init__(self, signals: Iterable[signal.Signals], on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous = {signum: signal.signal(signum, _ignore) for signum in signals}
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)

    def fileno(self) -> int:
        """Return the descriptor the loop watches."""
        return self._reader.fileno()

    def deliver(self) -> None:
        """Read the pending signal numbers and hand each to the callback, in order."""
        try:
            numbers = self._reader.recv(256)
        except (BlockingIOError, InterruptedError):
            return
        for signum in numbers:
            self._on_signal(signum)

    def close(self) -> None:
        """Restore the previous handlers and close the socket."""
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        for signum, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, previous)
        self._reader.close()
        self._writer.close()
