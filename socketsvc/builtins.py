"""The ``rpc.*`` methods, built in: registered like handlers, run on the event loop.

They answer while every worker is busy (a ping is how systemd, a load balancer
or a person learns the daemon is alive), so each must be quick and never block.
"""

from __future__ import annotations

from collections.abc import Callable

from .protocol import JSONValue
from .registry import Registry


def builtin_methods(status: Callable[[], dict[str, JSONValue]], handlers: Registry) -> Registry:
    """Return the registry of ``rpc.ping``, ``rpc.status`` and ``rpc.methods``."""
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

    builtins.add(ping, "rpc.ping")
    builtins.add(report, "rpc.status")
    builtins.add(methods, "rpc.methods")
    return builtins
