"""The fault campaign's tasks (tests/campaign): every run records its own start and end.

A run writes to ``testapp_campaignrun`` on a connection of its own, in autocommit, outside
the task's transaction and the daemon's bookkeeping: the history survives a rollback, a
failed result write or the run's process being killed (then the run has no end, and the
campaign knows when its process died). Each run returns a value naming itself, so the
checker can tell which run a stored result came from.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import connections

from socketsvc.tasks import limits, periodic, progress, retry

try:
    from django.tasks import TaskContext, task
except ImportError:  # Django 5.2
    from django_tasks import TaskContext, task

_local = threading.local()
# How long a run keeps trying to record its end through a database restart.
_RECORD_FOR = 30.0


def _recorder() -> Any:
    """Return this thread's private connection (never the one the task or the daemon uses)."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = connections.create_connection("default")
    return conn


def _execute(sql: str, params: list[Any], patient: bool) -> None:
    deadline = time.monotonic() + (_RECORD_FOR if patient else 0.0)
    while True:
        conn = _recorder()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
            return
        except Exception:
            try:
                conn.close()
            except Exception:  # the connection is broken anyway
                conn.connection = None
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _recorded(context: TaskContext, kind: str, work: Callable[[int], None]) -> str:
    """Record the run's start, do *work(attempt)*, record its end (in every case); return
    the run's own value."""
    result = context.task_result
    attempt = context.attempt
    pid = os.getpid()
    value = f"{result.id}:{attempt}:{pid}"
    claimed = result.last_attempted_at.timestamp()
    outcome = "error"
    try:
        # The start is recorded before any work: a run with no start record did nothing.
        # Inside the try: an INSERT that committed but whose reply was lost (a session
        # killed, the server restarted) raises, and the row it left still gets its end.
        _execute(
            "INSERT INTO testapp_campaignrun "
            "(task_id, attempt, kind, pid, claimed_at, started, ended, outcome, value) "
            "VALUES (%s, %s, %s, %s, %s, %s, NULL, '', '')",
            [result.id, attempt, kind, pid, claimed, time.time()],
            patient=False,
        )
        work(attempt)
        outcome = "ok"
        return value
    except BaseException as exc:
        outcome = type(exc).__name__
        raise
    finally:
        ended = time.time()
        _execute(
            "UPDATE testapp_campaignrun SET ended = %s, outcome = %s, value = %s "
            "WHERE task_id = %s AND attempt = %s AND pid = %s",
            [ended, outcome, value if outcome == "ok" else "", result.id, attempt, pid],
            patient=True,
        )


def _steps(seconds: float) -> None:
    """Work for *seconds* in steps, reporting progress (where a cancel is obeyed)."""
    steps = max(1, int(seconds / 0.05))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        progress(step, steps)


@task(takes_context=True)
def quick(context: TaskContext) -> str:
    """Record the run, nothing else."""
    return _recorded(context, "quick", lambda attempt: None)


@task(takes_context=True)
@retry(attempts=2, backoff=0.0)
def slow(context: TaskContext, seconds: float) -> str:
    """Work for *seconds* with progress; run again once if its run is lost."""
    return _recorded(context, "slow", lambda attempt: _steps(seconds))


def _fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def failing(context: TaskContext, seconds: float) -> str:
    """Work a little, then fail (no retries)."""
    return _recorded(context, "failing", lambda attempt: (_steps(seconds), _fail("on purpose")))


@task(takes_context=True)
@retry(attempts=3, backoff=0.2, factor=1.0, jitter=0.0)
def retried(context: TaskContext, fail_first: int) -> str:
    """Fail the first *fail_first* attempts, then succeed."""

    def work(attempt: int) -> None:
        _steps(0.05)
        if attempt <= fail_first:
            _fail(f"attempt {attempt} fails on purpose")

    return _recorded(context, "retried", work)


@task(takes_context=True)
@retry(attempts=2, backoff=0.0)
@limits(unique_key=lambda key, seconds: key)
def unique(context: TaskContext, key: str, seconds: float) -> str:
    """One READY or RUNNING task per *key* (enqueueing again gives that one)."""
    return _recorded(context, "unique", lambda attempt: _steps(seconds))


@task(takes_context=True)
@retry(attempts=2, backoff=0.0)
@limits(lock_key=lambda key, seconds: key)
def serial(context: TaskContext, key: str, seconds: float) -> str:
    """Tasks of one *key* run one at a time, in the order they were enqueued."""
    return _recorded(context, "serial", lambda attempt: _steps(seconds))


# The limits the checker holds the "limited" runs to.
LIMITED_CONCURRENCY, LIMITED_RATE = 2, 5


@task(takes_context=True)
@retry(attempts=2, backoff=0.0)
@limits(concurrency=LIMITED_CONCURRENCY, rate=f"{LIMITED_RATE}/s")
def limited(context: TaskContext, seconds: float) -> str:
    """At most two at once and five starts a second, on both daemons together."""
    return _recorded(context, "limited", lambda attempt: _steps(seconds))


# The time limits of the "timed" runs (the checker holds each run's end to them).
TIMED_SOFT, TIMED_HARD = 0.5, 1.5


def _overrun(mode: str) -> None:
    if mode == "busy":  # pure Python: the soft limit stops it
        deadline = time.monotonic() + 3 * TIMED_HARD
        while time.monotonic() < deadline:
            pass
    else:  # in a system call: only the hard limit (its process replaced) stops it
        time.sleep(60)


@task(takes_context=True)
@retry(attempts=2, backoff=0.0)
@limits(timeout=TIMED_SOFT, hard_timeout=TIMED_HARD)
def timed(context: TaskContext, mode: str) -> str:
    """Overrun its time limit: in Python ("busy") or in a system call ("sleep")."""
    return _recorded(context, "timed", lambda attempt: _overrun(mode))


# -- workflows: each step records its run and returns its value; a step after others
# receives theirs (the checker compares what it received with what they returned).


@task(takes_context=True)
@retry(attempts=2, backoff=0.0)
def flow_step(context: TaskContext, received: Any, seconds: float) -> str:
    """A step of a chain or a group (its first argument: what it received, None first)."""
    return _recorded(context, "flow", lambda attempt: _steps(seconds))


@task(takes_context=True)
def flow_failing(context: TaskContext, received: Any, seconds: float) -> str:
    """A step that fails (no retries): its workflow fails."""
    return _recorded(context, "flow", lambda attempt: (_steps(seconds), _fail("on purpose")))


@task(takes_context=True)
@retry(attempts=2, backoff=0.0)
def flow_join(context: TaskContext, results: list[Any]) -> str:
    """A chord's callback: receives every member's result, in member order."""
    return _recorded(context, "flow_join", lambda attempt: _steps(0.05))


@task(takes_context=True)
@retry(attempts=2, backoff=0.0)
def flow_on_error(context: TaskContext, info: dict[str, Any]) -> str:
    """A workflow's on_error step."""
    return _recorded(context, "flow_on_error", lambda attempt: None)


@task(takes_context=True)
def tick(context: TaskContext) -> str:
    """The campaign's periodic task (every second, every slot caught up, runs may overlap)."""
    return _recorded(context, "periodic", lambda attempt: None)


if os.environ.get("CAMPAIGN_PERIODIC"):
    periodic(every=timedelta(seconds=1), catch_up="all", overlap=True, name="campaign.tick")(tick)
