"""The huey side of the benchmark: the lookup as a task on Redis.

Consumer: ``huey_consumer bench.huey_app.huey`` (started by :mod:`bench.servers`).
Results are announced with BLPOP (``notify_result``), huey's fastest way back
to the caller, and the task closes old connections around the lookup as
``huey.contrib.djhuey.db_task`` does.
"""

import functools
import os
from collections.abc import Callable

from huey import RedisHuey

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

huey = RedisHuey(
    "bench",
    host="127.0.0.1",
    port=6379,
    db=int(os.environ.get("BENCH_HUEY_REDIS_DB", "14")),
    notify_result=True,
)


@functools.cache
def _handler() -> Callable[[int], str]:
    """Set Django up once per worker process and return the lookup."""
    import django

    django.setup()
    from bench.handlers import lookup as run

    return run


@huey.task()
def lookup(pk: int) -> str:
    """Return the product's name (the same handler socketsvc serves)."""
    run = _handler()
    from django.db import close_old_connections

    close_old_connections()
    try:
        return run(pk)
    finally:
        close_old_connections()
