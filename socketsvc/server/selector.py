"""The event loop's selector: epoll, plus waiting on a shared listening socket exclusively.

When several worker processes accept on one socket, each registers it with
``EPOLLEXCLUSIVE`` on the epoll instance its loop waits on: a new connection
wakes one process blocked in ``epoll_wait``, not all of them (the thundering
herd). The kernel wakes the first such waiter in the socket's queue, so an
idle process that stayed first would take every connection (and, with
clients that keep their connections, every request); :meth:`rotate` moves
this process to the back of the queue after it accepted, so idle processes
take turns. ``selectors.EpollSelector`` has no way to pass the flag, so this
subclass keeps the standard bookkeeping and makes the one registration itself.
"""

from __future__ import annotations

import select
import selectors
from collections.abc import Callable
from typing import Any

_EXCLUSIVE = select.EPOLLIN | select.EPOLLEXCLUSIVE


class LoopSelector(selectors.EpollSelector):
    """An epoll selector that can wait on a listening socket exclusively."""

    def register_exclusive(self, fileobj: Any, data: Callable[[], None]) -> selectors.SelectorKey:
        """Register *fileobj* for reading with EPOLLEXCLUSIVE (unregister() undoes it)."""
        key = selectors._BaseSelectorImpl.register(self, fileobj, selectors.EVENT_READ, data)
        try:
            self._selector.register(key.fd, _EXCLUSIVE)  # type: ignore[attr-defined]
        except BaseException:
            selectors._BaseSelectorImpl.unregister(self, fileobj)
            raise
        return key

    def rotate(self, fileobj: Any) -> None:
        """Re-register an exclusive *fileobj*: this process goes to the back of its waiters."""
        key = self.get_key(fileobj)
        self.unregister(fileobj)
        self.register_exclusive(fileobj, key.data)
