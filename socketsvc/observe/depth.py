"""How many tasks wait in each queue and how long the oldest has waited, from the database.

One grouped query, cached for a few seconds so that scrapes, the dashboard's
samples and ``rpc.status`` readers do not each cost one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from socketsvc.models import TaskRecord, TaskStatus

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class QueueDepth:
    """One queue: its READY tasks, and the age of the oldest one that may start now."""

    queue: str
    ready: int
    oldest_seconds: float


class Depths:
    """The READY tasks of one database's queues, read at most every ``CACHE_SECONDS``."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._read_at = -CACHE_SECONDS
        self._figures: list[QueueDepth] = []
        # Queues seen before stay, at 0, once they are empty (a series does not vanish).
        self._seen: set[str] = set()

    def read(self) -> list[QueueDepth]:
        """Return every queue with READY tasks (cached)."""
        with self._lock:
            if time.monotonic() - self._read_at < CACHE_SECONDS:
                return self._figures
            now = timezone.now()
            rows = (
                TaskRecord.objects.using(self.database)
                .filter(status=TaskStatus.READY)
                .values("queue_name")
                .annotate(
                    ready=Count("id"), oldest=Min("available_at", filter=Q(available_at__lte=now))
                )
                .order_by()
            )
            figures = {
                row["queue_name"]: QueueDepth(
                    row["queue_name"],
                    row["ready"],
                    max(0.0, (now - row["oldest"]).total_seconds()) if row["oldest"] else 0.0,
                )
                for row in rows
            }
            self._seen.update(figures)
            self._figures = [
                figures.get(queue, QueueDepth(queue, 0, 0.0)) for queue in sorted(self._seen)
            ]
            self._read_at = time.monotonic()
            return self._figures


class DepthCollector:
    """A Prometheus collector of :class:`Depths` (queue depth and oldest age per queue)."""

    def __init__(self, depths: Depths) -> None:
        self.depths = depths

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        ready = GaugeMetricFamily(
            "socketsvc_queue_depth", "READY tasks, by queue.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "socketsvc_queue_oldest_seconds",
            "Age of the oldest READY task that may start now, by queue.",
            labels=["queue"],
        )
        for figure in self.depths.read():
            ready.add_metric([figure.queue], figure.ready)
            oldest.add_metric([figure.queue], figure.oldest_seconds)
        yield ready
        yield oldest


class _Here:
    """The queue figures of this process's task database (set by the daemon at start)."""

    depths: Depths | None = None


def use(depths: Depths | None) -> None:
    """Make *depths* the queue figures this process reports."""
    _Here.depths = depths


def here() -> Depths | None:
    """Return the queue figures this process reports, if it serves tasks."""
    return _Here.depths
