"""Bounded polling: wait for a condition, never for a guessed amount of time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.02,
    why: Callable[[], str] | None = None,
) -> T:
    """Return predicate()'s first truthy value within *timeout* seconds, else fail.

    The failure says *why()* when given (a log, a state), so a timeout explains itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f":\n{why()}" if why is not None else ""
            raise AssertionError(f"condition not met within {timeout} s{detail}")
        time.sleep(interval)


def busy_workers_at_least(daemon, count: int, timeout: float = 20.0) -> dict:
    """Wait until the daemon reports *count* busy workers; return that status."""
    return poll(
        lambda: (status := daemon.call("rpc.status"))["busy_workers"] >= count and status,
        timeout,
    )
