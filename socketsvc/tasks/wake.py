"""Tell the daemon there is work: a notification over its socket, or a direct call in-process.

A wake-up is only a hint. Losing one (the daemon is down, restarting, or its
backlog is full for longer than a moment) delays a task until the daemon's
next start or its slow safety sweep; it never loses the task, which is a row.
"""

from __future__ import annotations

import logging
from typing import Protocol

from socketsvc.client import notify_with
from socketsvc.errors import SocketServiceError

# The stdlib's logging: this runs in web processes, whose LOGGING decides.
log = logging.getLogger(__name__)

# Seconds an enqueuing request may spend telling the daemon; the row is safe anyway.
WAKE_TIMEOUT = 0.5


class Wakeable(Protocol):
    """What runs tasks in this process (the daemon's task runner)."""

    def wake(self, queue: str | None = None) -> None: ...

    def cancel_hint(self, record_id: str) -> None: ...


_in_process: list[Wakeable] = []


def serve_in_process(runner: Wakeable | None) -> None:
    """Register (or with None, forget) the runner of this process: wake it directly."""
    _in_process[:] = [] if runner is None else [runner]


def wake(queue: str) -> None:
    """Tell the task runner that *queue* has a task ready."""
    if _in_process:
        _in_process[0].wake(queue)
        return
    _notify("rpc.tasks.wake", {"queue": queue})


def cancel_hint(record_id: str) -> None:
    """Tell the task runner that *record_id* was asked to stop."""
    if _in_process:
        _in_process[0].cancel_hint(record_id)
        return
    _notify("rpc.tasks.cancel", {"id": record_id})


def _notify(method: str, params: dict[str, str]) -> None:
    try:
        notify_with(method, params, timeout=WAKE_TIMEOUT)
    except SocketServiceError as exc:
        log.debug("%s not delivered (the task waits for the daemon): %s", method, exc)
