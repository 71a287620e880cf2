"""The producer side of the task benchmark: enqueue the task, wait for it, read the backend's times.

Runs in a fresh interpreter per task system (a Django process has one
``TASKS``; :mod:`bench.taskbench` sets ``BENCH_TASKS`` and starts it), prints
one line of JSON::

    python -m bench.producers LATENCY_COUNT PAUSE TASK_COUNT PRODUCERS...

In order:

* probe: one task, waited for (up to a minute): the workers are up and warm;
* latency: one producer, one task at a time: a random pause (5-15 ms plus up
  to PAUSE, the workers' poll interval, so a task arrives at any point of a
  polling worker's sleep), enqueue, wait until it finished, the next. Per
  task: the ``started_at`` the backend recorded minus the wall-clock time the
  ``enqueue()`` call began (same host, same clock). ``get_result()`` is read
  for every backend: socketsvc's and django-tasks-db's come from their rows,
  django-tasks-rq's ``started_at`` is the RQ job's;
* throughput, once per PRODUCERS: that many forked processes, released
  together, enqueue TASK_COUNT tasks between them as fast as they can;
  tasks/s is TASK_COUNT over the time from the first ``enqueue()`` call to the
  last ``finished_at`` the backend recorded.
"""

from __future__ import annotations

import json
import multiprocessing.synchronize
import os
import random
import sys
import time
from multiprocessing.queues import Queue
from typing import Any

from bench.measure import in_clients
from bench.model import CTX

WAIT_TIMEOUT = 60.0
# Waiting for a task: the first look after 20 ms, then every 10 ms, so the
# producer stays out of the way of the system while it starts the task.
_FIRST_LOOK, _LOOK_EVERY = 0.02, 0.01
_FINISHED = {"SUCCESSFUL", "FAILED", "finished", "failed"}
_OK = {"SUCCESSFUL", "finished"}


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()


def _text(status: Any) -> str:
    """Return a status (the framework's enum, or RQ's) as its plain value."""
    return str(getattr(status, "value", status))


def _epoch(moment: Any) -> float | None:
    return None if moment is None else float(moment.timestamp())


def _product_ids() -> list[int]:
    from project.shop.models import Product

    return list(Product.objects.filter(sku__startswith="BENCH-").values_list("id", flat=True))


def _wait(result_id: str, timeout: float = WAIT_TIMEOUT) -> Any:
    """Poll ``get_result()`` until the task finished; return its result (raise on timeout)."""
    from bench.tasks_app import lookup

    deadline = time.monotonic() + timeout
    time.sleep(_FIRST_LOOK)
    while True:
        result = lookup.get_result(result_id)
        if _text(result.status) in _FINISHED:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {result_id} still {_text(result.status)} after {timeout} s")
        time.sleep(_LOOK_EVERY)


def _key(task_id: Any) -> str:
    """Return a task id as text without dashes (a UUID column gives them back either way)."""
    return str(task_id).replace("-", "")


def _times(ids: list[str]) -> list[tuple[str, float | None, float | None]]:
    """Return (status, started_at, finished_at) of each task, in the order of *ids*."""
    backend = os.environ["BENCH_TASKS"]
    chunks = [ids[i : i + 500] for i in range(0, len(ids), 500)]
    if backend == "rq":
        import django_rq
        from rq.job import Job

        connection = django_rq.get_connection("bench")
        rows: list[tuple[str, float | None, float | None]] = []
        for chunk in chunks:
            for job in Job.fetch_many(chunk, connection=connection):
                if job is None:
                    rows.append(("missing", None, None))
                else:
                    status = _text(job.get_status(refresh=False))
                    rows.append((status, _epoch(job.started_at), _epoch(job.ended_at)))
        return rows
    model: Any
    if backend == "socketsvc":
        from socketsvc.models import TaskRecord

        model = TaskRecord
    else:
        from django_tasks_db.models import DBTaskResult

        model = DBTaskResult
    found: dict[str, tuple[str, float | None, float | None]] = {}
    for chunk in chunks:
        values = model.objects.filter(id__in=chunk).values_list(
            "id", "status", "started_at", "finished_at"
        )
        found.update({_key(i): (_text(s), _epoch(b), _epoch(e)) for i, s, b, e in values})
    return [found.get(_key(task_id), ("missing", None, None)) for task_id in ids]


# -- the measurements ----------------------------------------------------------


def probe() -> None:
    """Enqueue one task and wait for it; raise if it does not succeed within a minute."""
    from bench.tasks_app import lookup

    result = _wait(lookup.enqueue(_product_ids()[0]).id)
    if _text(result.status) not in _OK:
        raise RuntimeError(f"the probe task ended {_text(result.status)}: {result.errors}")


def latency(count: int, pause: float) -> dict[str, Any]:
    """One task at a time on an idle system: enqueue -> started (ms) and enqueue() (ms) each."""
    from bench.tasks_app import lookup

    rng = random.Random(7)  # noqa: S311 (not security)
    samples: list[float] = []
    enqueue_ms: list[float] = []
    failed = 0
    for pk in rng.choices(_product_ids(), k=count):
        time.sleep(rng.uniform(0.005, 0.015) + rng.uniform(0.0, pause))
        began = time.time()
        clock = time.perf_counter()
        result = lookup.enqueue(pk)
        enqueue_ms.append((time.perf_counter() - clock) * 1000)
        try:
            done = _wait(result.id)
        except TimeoutError:
            failed += 1
            continue
        if _text(done.status) not in _OK or done.started_at is None:
            failed += 1
            continue
        samples.append((done.started_at.timestamp() - began) * 1000)
    return {"latency_ms": samples, "enqueue_ms": enqueue_ms, "failed": failed}


def _produce(
    count: int, seed: int, barrier: multiprocessing.synchronize.Barrier, out: Queue[Any]
) -> None:
    """One producer process: warm up on one task, then enqueue *count* tasks after the barrier."""
    from bench.tasks_app import lookup

    ids = _product_ids()
    _wait(lookup.enqueue(ids[seed % len(ids)]).id)
    picks = random.Random(seed).choices(ids, k=count)  # noqa: S311 (not security)
    barrier.wait()
    first = time.time()
    enqueued = [lookup.enqueue(pk).id for pk in picks]
    out.put((first, time.time(), enqueued))


def throughput(producers: int, count: int) -> dict[str, Any]:
    """*producers* processes enqueue *count* tasks; tasks/s from first enqueue to last finish."""
    from django.db import connections

    connections.close_all()  # the producers are forked: each opens its own
    barrier = CTX.Barrier(producers)
    shares = [count // producers + (n < count % producers) for n in range(producers)]
    args = [(share, seed, barrier) for seed, share in enumerate(shares)]
    reports = in_clients(_produce, args, 600.0)
    first = min(r[0] for r in reports)
    enqueued_by = max(r[1] for r in reports)
    pending = [task_id for r in reports for task_id in r[2]]
    rows: list[tuple[str, float | None, float | None]] = []
    deadline = time.monotonic() + 600.0
    while pending and time.monotonic() < deadline:
        # Only the tasks not seen finished yet, ten times a second: a light load.
        time.sleep(0.1)
        now = _times(pending)
        rows += [row for row in now if row[0] in _FINISHED]
        left = zip(pending, now, strict=True)
        pending = [task_id for task_id, row in left if row[0] not in _FINISHED]
    done = [end for status, _, end in rows if status in _OK and end is not None]
    failed = count - len(done)
    last = max(done) if done else time.time()
    return {
        "producers": producers,
        "tasks_per_s": len(done) / (last - first) if done else 0.0,
        "enqueue_s": enqueued_by - first,
        "seconds": last - first,
        "failed": failed,
    }


def main(argv: list[str]) -> None:
    """Probe, then measure latency and throughput; print the figures as one JSON line."""
    latency_count, pause, task_count, *producers = argv
    _setup()
    probe()
    figures: dict[str, Any] = latency(int(latency_count), float(pause))
    figures["throughput"] = [throughput(int(p), int(task_count)) for p in producers]
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
