"""The task every task system of the benchmark runs: the RPC benchmark's unit of work.

One product by primary key through the ORM on the benchmark's MariaDB, its
name back. Imported only by processes whose settings serve the ``bench``
queue (``BENCH_TASKS`` in :mod:`bench.settings`): the producers and each
system's workers; ``@task`` validates the queue against the backend on import.
"""

import time

from project.shop.models import Product
from socketsvc.tasks.compat import task


@task(queue_name="bench")
def lookup(pk: int) -> str:
    """Return the name of the product with primary key *pk*."""
    return Product.objects.get(pk=pk).name


@task(queue_name="bench")
def fan_member(n: int) -> float:
    """A chord's member: return when it ended (this host's clock)."""
    return time.time()


@task(queue_name="bench")
def fan_in(ends: list[float]) -> dict[str, float]:
    """A chord's callback: how long after the last member's end it started."""
    started = time.time()
    return {"latency": started - max(ends), "members": len(ends)}


@task(queue_name="bench")
def noop(n: int) -> int:
    """Do nothing (the drain benchmark: what a task costs the system itself)."""
    return n
