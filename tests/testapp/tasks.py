"""Tasks for the suite: ones that succeed, fail, retry, report progress, wait, and touch the DB."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

from django.db import connection

from socketsvc.tasks import periodic, progress, retry

# The fault campaign's tasks (and its schedule, when CAMPAIGN_PERIODIC is set) are
# found through this module.
from . import campaign  # noqa: F401
from .gates import wait_at
from .models import Marker, Note

try:
    from django.tasks import TaskContext, task
except ImportError:  # Django 5.2
    from django_tasks import TaskContext, task


@task
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@task
def fail(message: str) -> None:
    """Raise a ValueError."""
    raise ValueError(message)


@task
def sleep_then_return(seconds: float) -> float:
    """Sleep without touching the database, then return."""
    time.sleep(seconds)
    return seconds


@task
def query_sleep_query(seconds: float) -> int:
    """Query, sleep without touching the database, query again."""
    Note.objects.count()
    time.sleep(seconds)
    return Note.objects.count()


@task
def mark(key: str) -> str:
    """Insert a unique key: a task that ran twice fails on the second insert."""
    Marker.objects.create(key=key)
    return key


@task
def hold(gate: str, timeout: float = 60.0) -> str:
    """Wait at the test's gate (tests/harness/gate.py) until the test opens it."""
    wait_at(gate, timeout)
    return "released"


@task
def hold_then_mark(gate: str, key: str) -> str:
    """Wait at the gate, then insert a unique key."""
    hold.call(gate)
    return mark.call(key)


@task
@retry(attempts=2, backoff=0.0)
def hold_then_mark_retried(gate: str, key: str) -> str:
    """Wait at the gate, then insert a unique key; run again if its run was lost."""
    hold.call(gate)
    return mark.call(key)


@task(takes_context=True)
@retry(attempts=4, backoff=0.3, factor=2.0, jitter=0.0)
def flaky(context: TaskContext, failures: int) -> int:
    """Fail the first *failures* attempts, then return the attempt number."""
    if context.attempt <= failures:
        raise ConnectionError(f"attempt {context.attempt} fails on purpose")
    return context.attempt


@task
@retry(attempts=3, backoff=0.1, retry_on=(ConnectionError,))
def fails_once_with_value_error(message: str) -> None:
    """Raise an error its policy does not retry."""
    raise ValueError(message)


@task
def count_slowly(total: int, pause: float, gate: str = "") -> int:
    """Report progress over *total* steps, pausing between them (and at a gate first)."""
    if gate:
        hold.call(gate)
    for step in range(1, total + 1):
        progress(step, total, note=f"step {step}")
        time.sleep(pause)
    return total


@task
def connection_id() -> int:
    """Return the server-side id of this worker's DB session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


@task
def tick(gate: str = "") -> str:
    """A periodic task for the suite (holding at a gate first, if given one)."""
    if gate:
        hold.call(gate)
    return "tick"


# The periodic tests declare "test.tick" through TEST_PERIODIC, e.g.
# {"every": 1, "catch_up": "all"} (and choose it with SOCKETSVC's SCHEDULES).
if os.environ.get("TEST_PERIODIC"):
    _spec = json.loads(os.environ["TEST_PERIODIC"])
    _every = _spec.pop("every", None)
    periodic(
        every=None if _every is None else timedelta(seconds=_every), name="test.tick", **_spec
    )(tick)


@task
def hold_then_fail(gate: str) -> None:
    """Wait at the gate, then raise (no retries)."""
    hold.call(gate)
    raise ValueError("fails after the gate")


@task
@retry(attempts=3, backoff=0.0)
def hold_then_fail_retried(gate: str) -> None:
    """Wait at the gate, then raise an error its policy retries."""
    hold.call(gate)
    raise ValueError("fails after the gate")


@task
def return_nul() -> str:
    """Return a string holding a NUL (PostgreSQL's jsonb refuses it)."""
    return "a\x00b"


@task
def return_large(size: int) -> str:
    """Return a string of *size* characters."""
    return "x" * size
