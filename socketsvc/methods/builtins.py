"""The ``rpc.*`` methods, built in: registered like handlers, run on the event loop.

They answer while every worker is busy (a ping is how systemd, a load balancer
or a person learns the daemon is alive), so each must be quick and never block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from socketsvc.methods.registry import Registry
from socketsvc.protocol import JSONValue


class Tasks(Protocol):
    """The task runner as the loop and the built-ins see it (``tasks.daemon.runner`` is one)."""

    @property
    def busy(self) -> int: ...

    def wake(self, queue: str | None = None, forward: bool = True) -> None: ...

    def cancel_hint(self, record_id: str) -> None: ...

    def begin_drain(self) -> None: ...

    def status(self) -> dict[str, JSONValue]: ...


def builtin_methods(
    status: Callable[[], dict[str, JSONValue]], handlers: Registry, tasks: Tasks | None
) -> Registry:
    """Return the registry of ``rpc.ping``, ``rpc.status``, ``rpc.methods`` and ``rpc.tasks.*``."""
    builtins = Registry(builtins=True)

    def ping() -> str:
        """Answer 'pong'."""
        return "pong"

    def methods() -> list[dict[str, str]]:
        """List the methods."""
        return [method.describe() for method in (*builtins, *handlers)]

    def report() -> dict[str, JSONValue]:
        """Report counters."""
        return status()

    def wake(queue: str | None = None) -> None:
        """Wake the task runner: a task was enqueued (sent as a notification)."""
        if tasks is not None:
            tasks.wake(queue)

    def cancel(id: str) -> None:
        """Stop a running task at its next progress() (sent as a notification)."""
        if tasks is not None:
            tasks.cancel_hint(id)

    builtins.add(ping, "rpc.ping")
    builtins.add(report, "rpc.status")
    builtins.add(methods, "rpc.methods")
    builtins.add(wake, "rpc.tasks.wake")
    builtins.add(cancel, "rpc.tasks.cancel")
    return builtins
