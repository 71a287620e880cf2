"""Tasks under ``@limits``: each records when its own code ran, as rows of Marker.

``<label>|<seq>|start|<epoch>`` and ``<label>|<seq>|end|<epoch>`` (this host's
clock) give each run's interval from inside it; ``in|<label>`` exists while a run
of *label* is inside, so two runs of one label at once fail on the second insert.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

from django.db import connection

from socketsvc.tasks import limits, progress

from .models import Marker

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task


def _stamp(label: str, seq: int, edge: str) -> None:
    Marker.objects.create(key=f"{label}|{seq}|{edge}|{time.time():.6f}")


def _run(label: str, seq: int, seconds: float, exclusive: bool) -> int:
    if exclusive:
        Marker.objects.create(key=f"in|{label}")  # IntegrityError if one is inside already
    _stamp(label, seq, "start")
    time.sleep(seconds)
    _stamp(label, seq, "end")
    if exclusive:
        Marker.objects.filter(key=f"in|{label}").delete()
    return seq


@task
@limits(unique_key=lambda name, seq, seconds: name)
def unique_run(name: str, seq: int, seconds: float) -> int:
    """One at a time per *name*, by its unique key."""
    return _run(name, seq, seconds, exclusive=True)


@task
@limits(unique_key=lambda name: name, on_duplicate="raise")
def unique_strict(name: str) -> str:
    """Enqueueing it again while one is queued raises DuplicateTask."""
    return name


@task
@limits(lock_key=lambda key, seq, seconds: f"serial:{key}")
def serial_run(key: str, seq: int, seconds: float) -> int:
    """Runs of one *key* one at a time, in the order they were enqueued."""
    return _run(key, seq, seconds, exclusive=True)


@task
@limits(concurrency=3)
def limited_run(seq: int, seconds: float) -> int:
    """At most three at once, on every daemon together."""
    return _run("limited", seq, seconds, exclusive=False)


@task
@limits(rate="10/s")
def rated(seq: int) -> int:
    """At most ten starts in any second, on every daemon together."""
    return seq


@task
def queue_limited(seq: int, seconds: float) -> int:
    """Limited by its queue's QUEUE_LIMITS (the test's settings)."""
    return _run("queued", seq, seconds, exclusive=False)


@task
@limits(timeout=1, hard_timeout=4)
def busy_loop() -> None:
    """Pure Python forever: the soft limit stops it at a bytecode."""
    Marker.objects.create(key="busy|in")
    while True:
        pass


@task
@limits(timeout=1, hard_timeout=3)
def sleep_forever() -> None:
    """Blocked in a system call: only the hard limit stops it."""
    Marker.objects.create(key="sleep|in")
    time.sleep(3600)


@task
@limits(timeout=1, hard_timeout=3)
def stuck_in_c() -> None:
    """Inside one C call (a regular expression that backtracks for hours): only the hard limit
    stops it."""
    Marker.objects.create(key="regex|in")
    re.match(r"(a+)+$", "a" * 64 + "b")


@task
def spin_without_progress() -> None:
    """Never calls progress(): a cancel must still stop it."""
    Marker.objects.create(key="spin|in")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pass


@task
@limits(expires=timedelta(seconds=2))
def expiring(key: str) -> str:
    """Ends FAILED with TaskExpired if not started within two seconds of its enqueue."""
    Marker.objects.create(key=key)
    return key


@task
async def async_count(key: str) -> int:
    """An async task using the async ORM: its queries run on the worker's checked connection."""
    await Marker.objects.acreate(key=key)
    return await Marker.objects.filter(key=key).acount()


@task
async def async_connection_id() -> int:
    """The database session an async task's ORM calls use."""

    def session() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT CONNECTION_ID()"
                if connection.vendor == "mysql"
                else "SELECT pg_backend_pid()"
            )
            return int(cursor.fetchone()[0])

    from asgiref.sync import sync_to_async

    return await sync_to_async(session)()


@task
@limits(timeout=1, hard_timeout=5)
async def async_sleep_forever() -> None:
    """An async task awaiting forever: its coroutine is cancelled at the soft limit."""
    await Marker.objects.acreate(key="asleep|in")
    await asyncio.sleep(3600)


@task
def counts_with_progress(total: int) -> int:
    """Reports progress (a cancel or a time limit is raised there too)."""
    for n in range(total):
        progress(n, total)
        time.sleep(0.01)
    return total


@task
async def async_pause_then_count(seconds: float) -> int:
    """Await a pause with no query (the session idles past wait_timeout), then query."""
    await asyncio.sleep(seconds)
    return await Marker.objects.acount()
