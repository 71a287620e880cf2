"""How often a task may run, and how long to wait between attempts: ``@retry``.

A policy is attached to the task's function, so the same task code runs on
any backend (another backend ignores it)::

    from django.tasks import task            # django_tasks on Django 5.2
    from socketsvc.tasks import retry

    @task
    @retry(attempts=5, backoff=2.0)          # 2 s, 4 s, 8 s, 16 s between attempts (± jitter)
    def send_invoice(order_id: int) -> None: ...
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F")

_ATTRIBUTE = "_socketsvc_retry"


class Cancelled(BaseException):
    """The task was cancelled; raised inside it at its next ``progress()`` call.

    A BaseException, like ``asyncio.CancelledError``, so a task's own ``except
    Exception`` does not swallow it. A cancelled task is never retried.
    """


class TimeLimitExceeded(BaseException):
    """The run went past its time limit (``@limits(timeout=...)``).

    Raised inside the task at the soft limit; recorded as the run's error when
    the run was stopped at the hard limit. A BaseException, so a task's own
    ``except Exception`` does not swallow it; catch it by name to clean up.
    Retried like any failure while the task's ``@retry`` allows.
    """


class TaskExpired(Exception):
    """The task was not started before it expired (``@limits(expires=...)``); it never ran."""


class DuplicateTask(Exception):
    """A task with the same unique key is READY or RUNNING (``on_duplicate="raise"``).

    ``existing`` is that task's result id.
    """

    def __init__(self, message: str, existing: str) -> None:
        super().__init__(message)
        self.existing = existing


class WorkerLost(Exception):
    """The daemon running the task stopped (killed, crashed, its host lost) before it finished."""


class ResultNotStored(Exception):
    """The database refused the task's result (a value it cannot hold, a statement too large).

    Recorded in the task's errors, with the reason; the task ends FAILED.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """At most *attempts* runs; before run n+1 wait ``backoff * factor**(n-1)`` (capped)."""

    attempts: int = 1
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 3600.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, not {self.attempts!r}")
        if self.backoff < 0 or self.factor < 1 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0, factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}")

    def retries(self, attempts_made: int, exc: BaseException) -> bool:
        """Return True if a failure with *exc* after *attempts_made* runs gets another run."""
        if isinstance(exc, Cancelled) or attempts_made >= self.attempts:
            return False
        return isinstance(exc, (*self.retry_on, WorkerLost, TimeLimitExceeded))

    def delay(self, attempts_made: int) -> float:
        """Return seconds to wait before the next run, after *attempts_made* runs."""
        base = min(self.max_backoff, self.backoff * self.factor ** max(0, attempts_made - 1))
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread))  # noqa: S311 (not crypto)


NO_RETRY = RetryPolicy()


def retry(
    attempts: int = 3,
    *,
    backoff: float = 1.0,
    factor: float = 2.0,
    max_backoff: float = 3600.0,
    jitter: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Callable[[F], F]:
    """Declare how often a task may run in all (*attempts*) and the backoff between runs.

    Put it under ``@task`` (on the function) or over it (on the Task).
    """
    policy = RetryPolicy(attempts, backoff, factor, max_backoff, jitter, retry_on)

    def attach(target: F) -> F:
        func = getattr(target, "func", target)  # a Task, or its function
        setattr(func, _ATTRIBUTE, policy)
        return target

    return attach


def policy_of(func: Any) -> RetryPolicy:
    """Return the policy declared on a task function (no retries if none)."""
    policy = getattr(func, _ATTRIBUTE, None)
    return policy if isinstance(policy, RetryPolicy) else NO_RETRY
