"""The dashboard's figures: the activity table and the task table, read for the last hour or day.

The activity rows (:mod:`~socketsvc.observe.activity`) give, per minute, what
every daemon counted; they are summed here into the window's slots (a minute
each for the last hour, a quarter of an hour for the last day). Percentiles come
from the histogram buckets, interpolated within a bucket as Prometheus does.
What stands now (READY, RUNNING and WAITING tasks, the oldest waiting one)
comes from the task table.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Min, Q
from django.utils import timezone

from socketsvc.models import ActivityRecord, DaemonRecord, TaskRecord, TaskStatus
from socketsvc.observe.activity import BOUNDS


@dataclass(frozen=True)
class Window:
    """The slots a chart shows: *slots* of *seconds* each, the last ending after *now*."""

    name: str
    slots: int
    seconds: int
    start: datetime

    def index(self, moment: datetime) -> int | None:
        """Return the slot *moment* falls in, or None outside the window."""
        offset = int((moment - self.start).total_seconds()) // self.seconds
        return offset if 0 <= offset < self.slots else None

    def times(self) -> list[datetime]:
        """Return the start of every slot."""
        return [self.start + timedelta(seconds=n * self.seconds) for n in range(self.slots)]


WINDOWS = {"hour": (60, 60), "day": (96, 900)}


def window(name: str, now: datetime | None = None) -> Window:
    """Return the window called *name* (``hour`` or ``day``) ending with the slot of *now*."""
    slots, seconds = WINDOWS.get(name, WINDOWS["hour"])
    now = now or datetime.now(UTC)
    stamp = int(now.timestamp()) // seconds * seconds
    start = datetime.fromtimestamp(stamp - (slots - 1) * seconds, UTC)
    return Window(name if name in WINDOWS else "hour", slots, seconds, start)


def percentile(counts: list[float], q: float) -> float | None:
    """Return the *q* quantile of a histogram of ``BOUNDS`` buckets (None when empty)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for n, count in enumerate(counts):
        if count and seen + count >= rank:
            if n >= len(BOUNDS):
                return BOUNDS[-1]  # past the last bound: at least that
            lower = BOUNDS[n - 1] if n else 0.0
            return lower + (BOUNDS[n] - lower) * (rank - seen) / count
        seen += count
    return BOUNDS[-1]


@dataclass
class QueueNow:
    """One queue as it stands."""

    queue: str
    ready: int = 0
    running: int = 0
    waiting: int = 0
    oldest_seconds: float | None = None


@dataclass
class Figures:
    """What the dashboard draws for one window."""

    window: Window
    started: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, list[float]] = field(default_factory=dict)
    depth: dict[str, list[float | None]] = field(default_factory=dict)
    duration: dict[str, list[float | None]] = field(default_factory=dict)
    latency: dict[str, list[float | None]] = field(default_factory=dict)
    calls: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    queues: list[QueueNow] = field(default_factory=list)
    daemons: list[DaemonRecord] = field(default_factory=list)
    read_at: datetime = field(default_factory=timezone.now)


def read(name: str, database: str, now: datetime | None = None) -> Figures:
    """Read the figures of the window *name* from *database*."""
    span = window(name, now)
    figures = Figures(span)
    size = span.slots
    started: defaultdict[str, list[float]] = defaultdict(lambda: [0.0] * size)
    failed: defaultdict[str, list[float]] = defaultdict(lambda: [0.0] * size)
    depth: defaultdict[str, list[float | None]] = defaultdict(lambda: [None] * size)
    histograms = {
        "duration": [[0.0] * (len(BOUNDS) + 1) for _ in range(size)],
        "latency": [[0.0] * (len(BOUNDS) + 1) for _ in range(size)],
    }
    figures.calls = [0.0] * size
    figures.errors = [0.0] * size
    figures.down = [0.0] * size
    rows = (
        ActivityRecord.objects.using(database)
        .filter(minute__gte=span.start)
        .values_list("minute", "series", "label", "bucket", "value")
    )
    for minute, series, label, bucket, value in rows.iterator(chunk_size=2000):
        slot = span.index(minute)
        if slot is None:
            continue
        if series == "started":
            started[label][slot] += value
        elif series == "failed":
            failed[label][slot] += value
        elif series == "calls":
            figures.calls[slot] += value / span.seconds
        elif series == "call_errors":
            figures.errors[slot] += value / span.seconds
        elif series == "depth":
            depth[label][slot] = max(depth[label][slot] or 0.0, value)
        elif series == "db_down":
            figures.down[slot] = min(1.0, figures.down[slot] + value / span.seconds)
        elif series in histograms and 0 <= bucket <= len(BOUNDS):
            histograms[series][slot][bucket] += value
    figures.started = dict(sorted(started.items()))
    figures.failed = dict(sorted(failed.items()))
    figures.depth = dict(sorted(depth.items()))
    for series, slots in histograms.items():
        target = figures.duration if series == "duration" else figures.latency
        target["p50"] = [percentile(counts, 0.5) for counts in slots]
        target["p99"] = [percentile(counts, 0.99) for counts in slots]
    figures.queues = queues_now(database)
    figures.daemons = list(
        DaemonRecord.objects.using(database).filter(stopped_at__isnull=True).order_by("started_at")
    )
    return figures


def queues_now(database: str) -> list[QueueNow]:
    """Return every queue with a READY, RUNNING or WAITING task, from the task table."""
    now = timezone.now()
    rows = (
        TaskRecord.objects.using(database)
        .filter(status__in=(TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.WAITING))
        .values("queue_name", "status")
        .annotate(
            count=Count("id"),
            oldest=Min("available_at", filter=Q(status=TaskStatus.READY, available_at__lte=now)),
        )
        .order_by()
    )
    found: dict[str, QueueNow] = {}
    for row in rows:
        queue = found.setdefault(row["queue_name"], QueueNow(row["queue_name"]))
        setattr(queue, str(row["status"]).lower(), row["count"])
        if row["oldest"] is not None:
            queue.oldest_seconds = max(0.0, (now - row["oldest"]).total_seconds())
    return [found[name] for name in sorted(found)]
