"""The Celery side of the benchmark: the lookup as a task, Redis as broker and result backend.

Worker: ``celery -A bench.celery_app worker -P solo`` (started by :mod:`bench.servers`).
Celery's Django fix-up closes old connections around every task, as Django
does around a request.
"""

import functools
import os
from collections.abc import Callable

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
REDIS_URL = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/13")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@functools.cache
def _handler() -> Callable[[int], str]:
    """Set Django up once per worker process and return the lookup."""
    import django

    django.setup()
    from bench.handlers import lookup as run

    return run


@app.task(name="bench.lookup")
def lookup(pk: int) -> str:
    """Return the product's name (the same handler socketsvc serves)."""
    return _handler()(pk)
