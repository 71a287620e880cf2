"""The task runner as the server sees it (``socketsvc.tasks.daemon.runner`` is one)."""

from __future__ import annotations

from typing import Protocol

from socketsvc.protocol import JSONValue


class Tasks(Protocol):
    """What the task runner offers the loop: wake-ups, cancel hints, the drain, its status."""

    @property
    def busy(self) -> int: ...

    def wake(self, queue: str | None = None, forward: bool = True) -> None: ...

    def cancel_hint(self, record_id: str) -> None: ...

    def begin_drain(self) -> None: ...

    def status(self) -> dict[str, JSONValue]: ...
