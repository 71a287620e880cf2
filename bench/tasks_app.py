"""The task every task system of the benchmark runs: the RPC benchmark's unit of work.

One product by primary key through the ORM on the benchmark's MariaDB, its
name back. Imported only by processes whose settings serve the ``bench``
queue (``BENCH_TASKS`` in :mod:`bench.settings`): the producers and each
system's workers; ``@task`` validates the queue against the backend on import.
"""

from project.shop.models import Product
from socketsvc.tasks.compat import task


@task(queue_name="bench")
def lookup(pk: int) -> str:
    """Return the name of the product with primary key *pk*."""
    return Product.objects.get(pk=pk).name
