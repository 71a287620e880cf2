"""What a task may do and when: ``@limits`` (unique, serial per key, concurrency, rate, time
limits, expiry), declared on the function like ``@retry``::

    from socketsvc.tasks import limits

    @task
    @limits(unique_key=lambda index: f"rebuild:{index}", timeout=600, hard_timeout=630)
    def rebuild_index(index: str) -> None: ...

    @task(queue_name="payments")
    @limits(concurrency=3, rate="5/s", expires=timedelta(hours=1))
    def charge(order_id: int) -> None: ...

Each holds across every daemon and worker process on every host: the database
decides, in the claim's own transaction (:mod:`socketsvc.tasks.daemon.admission`).
Queues get the same ``concurrency`` and ``rate`` in the backend's
``OPTIONS["QUEUE_LIMITS"]``. Another backend ignores them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

F = TypeVar("F")
Key = str | Callable[..., str | None] | None

_ATTRIBUTE = "_socketsvc_limits"
_KEY_LENGTH = 200
_RATE = re.compile(
    r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$"
)
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_UNITS |= {"h": 3600, "hour": 3600, "d": 86400, "day": 86400}
# Without hard_timeout, a task still running this long after its soft limit is stopped hard.
DEFAULT_GRACE = 10.0
# The most starts a rate may allow per window: its window's starts are kept in one row.
MAX_RATE_COUNT = 10_000


@dataclass(frozen=True)
class Rate:
    """At most *count* starts in any window of *period* seconds."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``"5/s"``, ``"100/m"``, ``"1000/h"``, ``"10/d"``, ``"3/10s"``."""
        found = _RATE.match(text) if isinstance(text, str) else None
        if found is None:
            raise ValueError(
                f"rate must look like '5/s', '100/m', '1000/h', '10/d' or '3/10s', not {text!r}"
            )
        count, times, unit = int(found[1]), float(found[2] or 1), _UNITS[found[3]]
        if not 1 <= count <= MAX_RATE_COUNT or times <= 0:
            raise ValueError(
                f"rate {text!r}: the count must be 1..{MAX_RATE_COUNT} per a period > 0"
            )
        return cls(count, times * unit)

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


@dataclass(frozen=True)
class Limits:
    """A task's controls (see :func:`limits`)."""

    unique_key: Key = None
    on_duplicate: Literal["existing", "raise"] = "existing"
    lock_key: Key = None
    concurrency: int | None = None
    rate: Rate | None = None
    timeout: float | None = None
    hard_timeout: float | None = None
    expires: timedelta | None = None

    def __post_init__(self) -> None:
        if self.on_duplicate not in ("existing", "raise"):
            raise ValueError("on_duplicate must be 'existing' or 'raise'")
        if self.concurrency is not None and (
            not isinstance(self.concurrency, int) or self.concurrency < 1
        ):
            raise ValueError(f"concurrency must be an int >= 1, not {self.concurrency!r}")
        for name in ("timeout", "hard_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
        if (
            self.timeout is not None
            and self.hard_timeout is not None
            and self.hard_timeout < self.timeout
        ):
            raise ValueError("hard_timeout is counted from the start too: it cannot be < timeout")
        if self.expires is not None and (
            not isinstance(self.expires, timedelta) or self.expires <= timedelta(0)
        ):
            raise ValueError(f"expires must be a positive timedelta, not {self.expires!r}")
        for name in ("unique_key", "lock_key"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) or callable(value)):
                raise ValueError(f"{name} must be a string or a function of the task's arguments")

    @property
    def hard_after(self) -> float | None:
        """Return seconds from the start after which the run is stopped hard (None: never)."""
        if self.hard_timeout is not None:
            return float(self.hard_timeout)
        if self.timeout is not None:
            return float(self.timeout) + DEFAULT_GRACE
        return None

    def stored(self) -> dict[str, Any]:
        """Return what a task's row keeps of them (what the daemon decides by)."""
        kept: dict[str, Any] = {}
        if self.concurrency is not None:
            kept["concurrency"] = self.concurrency
        if self.rate is not None:
            kept["rate"] = [self.rate.count, self.rate.period]
        if self.timeout is not None:
            kept["timeout"] = float(self.timeout)
        hard = self.hard_after
        if hard is not None:
            kept["hard_timeout"] = hard
        return kept


NO_LIMITS = Limits()


def limits(
    *,
    unique_key: Key = None,
    on_duplicate: Literal["existing", "raise"] = "existing",
    lock_key: Key = None,
    concurrency: int | None = None,
    rate: str | None = None,
    timeout: float | None = None,
    hard_timeout: float | None = None,
    expires: timedelta | None = None,
) -> Callable[[F], F]:
    """Declare a task's controls; each is optional. Put it under ``@task`` or over it.

    * *unique_key*: while a task of this function with this key is READY or
      RUNNING, enqueueing another returns that one's result (*on_duplicate*
      ``"existing"``) or raises :class:`DuplicateTask` (``"raise"``). A unique
      index decides, so two hosts enqueueing at once still make one task.
    * *lock_key*: tasks with the same key (of any function) never run at the
      same time, and start in the order they were enqueued.
    * *concurrency*: at most this many runs of the function at once, on all hosts.
    * *rate*: at most this many starts in any window (``"5/s"``, ``"100/m"``);
      a task over it waits (no attempt used) and starts when the window allows.
    * *timeout*: seconds a run may take; then :class:`TimeLimitExceeded` is raised
      inside it (at its next bytecode, or its next ``progress()``).
    * *hard_timeout*: seconds from the start after which a run that is still
      going (stuck in C code or a system call) is stopped by replacing its
      worker process (``--processes``); default *timeout* + 10 s.
    * *expires*: a task not started this long after it was enqueued ends
      FAILED with :class:`TaskExpired` and never runs.

    A key is a string, or a function called with the task's arguments that
    returns one (or None for no key).
    """
    declared = Limits(
        unique_key=unique_key,
        on_duplicate=on_duplicate,
        lock_key=lock_key,
        concurrency=concurrency,
        rate=Rate.parse(rate) if rate is not None else None,
        timeout=timeout,
        hard_timeout=hard_timeout,
        expires=expires,
    )

    def attach(target: F) -> F:
        func = getattr(target, "func", target)  # a Task, or its function
        setattr(func, _ATTRIBUTE, declared)
        if declared.hard_after is not None:
            name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
            TIMED[f"{getattr(func, '__module__', '')}.{name}"] = declared
        return target

    return attach


# The task functions imported so far that declare a time limit (for ``manage.py check``).
TIMED: dict[str, Limits] = {}


def limits_of(func: Any) -> Limits:
    """Return the limits declared on a task function (none if none)."""
    declared = getattr(func, _ATTRIBUTE, None)
    return declared if isinstance(declared, Limits) else NO_LIMITS


def key_for(key: Key, name: str, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """Return the key of one call (a string, or what the key function returns for it)."""
    if key is None:
        return None
    value = key(*args, **kwargs) if callable(key) else key
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must give a non-empty string (or None), not {value!r}")
    if len(value) > _KEY_LENGTH:
        raise ValueError(f"{name} {value[:40]!r}... is longer than {_KEY_LENGTH} characters")
    return value


@dataclass(frozen=True)
class Controls:
    """What one enqueued call stores beside its arguments."""

    unique_key: str | None = None
    lock_key: str | None = None
    expires_at: datetime | None = None
    limits: dict[str, Any] = field(default_factory=dict)


def controls_for(
    declared: Limits, args: list[Any], kwargs: dict[str, Any], now: datetime
) -> Controls:
    """Return the controls of one call of a task declaring *declared*."""
    if declared is NO_LIMITS:
        return Controls()
    return Controls(
        unique_key=key_for(declared.unique_key, "unique_key", args, kwargs),
        lock_key=key_for(declared.lock_key, "lock_key", args, kwargs),
        expires_at=now + declared.expires if declared.expires is not None else None,
        limits=declared.stored(),
    )


@dataclass(frozen=True)
class QueueLimits:
    """A queue's ``concurrency`` and ``rate`` (the backend's ``OPTIONS["QUEUE_LIMITS"]``)."""

    concurrency: int | None = None
    rate: Rate | None = None


def queue_limits(options: Mapping[str, Any], alias: str) -> dict[str, QueueLimits]:
    """Read ``OPTIONS["QUEUE_LIMITS"]``: ``{"payments": {"concurrency": 3, "rate": "5/s"}}``."""
    declared = options.get("QUEUE_LIMITS")
    declared = {} if declared is None else declared
    if not isinstance(declared, Mapping):
        raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['QUEUE_LIMITS'] must be a dict")
    found: dict[str, QueueLimits] = {}
    for queue, items in declared.items():
        where = f"TASKS[{alias!r}]['OPTIONS']['QUEUE_LIMITS'][{queue!r}]"
        if not isinstance(items, Mapping) or set(items) - {"concurrency", "rate"}:
            raise ImproperlyConfigured(f"{where} takes only 'concurrency' and 'rate'")
        concurrency = items.get("concurrency")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ImproperlyConfigured(f"{where}['concurrency'] must be an int >= 1")
        try:
            rate = Rate.parse(items["rate"]) if items.get("rate") is not None else None
        except ValueError as exc:
            raise ImproperlyConfigured(f"{where}: {exc}") from None
        found[str(queue)] = QueueLimits(concurrency, rate)
    return found


def waiting_reason(record: Any, now: datetime | None = None) -> str:
    """Return why a READY task is not running ("" if nothing holds it back)."""
    if record.status != "READY":
        return ""
    if record.waiting:
        return str(record.waiting)
    now = now or timezone.now()
    return "not due" if record.available_at > now else ""


def summary(limits: Mapping[str, Any]) -> str:
    """Return a task's stored limits as one line ("concurrency 3, rate 5/1s, timeout 10 s")."""
    parts = []
    if "concurrency" in limits:
        parts.append(f"concurrency {limits['concurrency']}")
    if "rate" in limits:
        count, period = limits["rate"]
        parts.append(f"rate {count}/{period:g}s")
    if "timeout" in limits:
        parts.append(f"timeout {limits['timeout']:g} s")
    if "hard_timeout" in limits:
        parts.append(f"hard timeout {limits['hard_timeout']:g} s")
    return ", ".join(parts)
