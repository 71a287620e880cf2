"""Fill a task system's queue before its workers start, then watch them drain it.

Runs in a process with one system's settings (``BENCH_TASKS``, see
:mod:`bench.settings`), started by :mod:`bench.drain`::

    python -m bench.drainfill fill COUNT     # enqueue COUNT no-op tasks; print {"seconds": s}
    python -m bench.drainfill watch COUNT    # wait until COUNT have finished; print the times

``fill`` uses each system's own way to enqueue many (socketsvc's
``enqueue_many()``, RQ's pipeline through ``enqueue()`` calls, django-tasks-db's
``enqueue()`` in one transaction: it has no bulk call). ``watch`` looks every
``LOOK_EVERY`` seconds at how many are left and reports when the first task was
taken and when the last one finished, as this process saw them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import django

LOOK_EVERY = 0.02
TIMEOUT = 600.0


def _fill(count: int) -> float:
    from django.db import transaction

    from bench.tasks_app import noop

    backend = os.environ["BENCH_TASKS"]
    started = time.monotonic()
    if backend == "socketsvc":
        from socketsvc.tasks import enqueue_many

        for start in range(0, count, 5000):
            enqueue_many(noop, [((n,), {}) for n in range(start, min(count, start + 5000))])
    elif backend == "db":
        with transaction.atomic():
            for n in range(count):
                noop.enqueue(n)
    else:
        for n in range(count):
            noop.enqueue(n)
    return time.monotonic() - started


def _left() -> int:
    """Return how many of the queue's tasks have not finished."""
    backend = os.environ["BENCH_TASKS"]
    if backend == "rq":
        import django_rq

        queue = django_rq.get_queue("bench")
        return int(len(queue) + queue.started_job_registry.count)
    model: Any
    if backend == "socketsvc":
        from socketsvc.models import TaskRecord

        model = TaskRecord
    else:
        from django_tasks_db.models import DBTaskResult

        model = DBTaskResult
    return int(model.objects.filter(queue_name="bench", status__in=("READY", "RUNNING")).count())


def _watch(count: int) -> dict[str, float]:
    """Wait until the queue is empty; when the first task was taken and the last finished."""
    deadline = time.monotonic() + TIMEOUT
    first = None
    while time.monotonic() < deadline:
        left = _left()
        now = time.time()
        if first is None and left < count:
            first = now
        if left == 0:
            assert first is not None
            return {"first": first, "last": now, "seconds": now - first}
        time.sleep(LOOK_EVERY)
    raise TimeoutError(f"{_left()} of {count} tasks still left after {TIMEOUT} s")


def main() -> None:
    django.setup()
    action, count = sys.argv[1], int(sys.argv[2])
    if action == "fill":
        print(json.dumps({"seconds": _fill(count)}), flush=True)
    else:
        print(json.dumps(_watch(count)), flush=True)


if __name__ == "__main__":
    main()
