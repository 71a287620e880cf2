"""The per-minute activity the admin's dashboard draws, kept in a small rolling table.

Each process of the daemon counts in memory what happened in each minute
(calls and their errors, task runs started and how they ended, how long they
took and waited, by queue; how long a database was down) and adds it to the
minute's rows of ``socketsvc_activity`` every ``FLUSH_EVERY`` seconds, with one
upsert per row (so any number of processes and daemons add up). While the
database is down the figures wait in memory (at most ``KEEP``, then the oldest
go) and are written once it is back: an outage's own minutes are there too.
The writing itself (the database's upsert, inside the daemon's unit of work)
is handed in by :mod:`socketsvc.process.observing`.
Rows older than ``KEEP`` are deleted (every ``PRUNE_EVERY`` seconds), so the
table holds about a day.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from socketsvc.observe.depth import Depths

log = structlog.get_logger(__name__)

FLUSH_EVERY = 10.0
KEEP = timedelta(hours=25)
# How often the writer deletes rows older than KEEP.
PRUNE_EVERY = 600.0
# The upper bounds of the histogram buckets (seconds) of run durations and start latency;
# the last bucket holds the rest. The dashboard's percentiles come from these.
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MAXED = "depth"
_ENDINGS = {
    "successful": "succeeded",
    "failed": "failed",
    "time_limit": "failed",
    "cancelled": "cancelled",
    "retry": "retried",
}

Key = tuple[int, str, str, int]  # minute (epoch seconds), series, label, bucket


def bucket_of(seconds: float) -> int:
    """Return the index of the histogram bucket *seconds* falls in."""
    return bisect.bisect_left(BOUNDS, seconds)


class Activity:
    """This process's figures not yet written (see the module docstring)."""

    def __init__(self, database: str, depths: Depths | None) -> None:
        self.database = database
        self.depths = depths
        self._lock = threading.Lock()
        self._pending: defaultdict[Key, float] = defaultdict(float)
        self._sampled_minute = 0

    # -- counting (any thread) -----------------------------------------------------

    def _add(self, series: str, label: str = "", amount: float = 1.0, bucket: int = 0) -> None:
        minute = int(time.time()) // 60 * 60
        with self._lock:
            self._pending[(minute, series, label, bucket)] += amount

    def call(self, error: bool) -> None:
        self._add("calls")
        if error:
            self._add("call_errors")

    def task_started(self, queue: str, latency: float) -> None:
        self._add("started", queue)
        self._add("latency", queue, bucket=bucket_of(latency))

    def task_ended(self, queue: str, outcome: str, seconds: float | None) -> None:
        self._add(_ENDINGS.get(outcome, "failed"), queue)
        if seconds is not None:
            self._add("duration", queue, bucket=bucket_of(seconds))

    def outage(self, alias: str, began: float, ended: float) -> None:
        """*alias* was down from *began* to *ended* (``time.time()``): seconds per minute."""
        with self._lock:
            start = began
            while start < ended:
                minute = int(start) // 60 * 60
                until = min(ended, minute + 60)
                self._pending[(minute, "db_down", alias, 0)] += until - start
                start = until

    # -- writing (the activity thread) ---------------------------------------------

    def flush(self, write: Callable[[list[list[Any]]], None]) -> None:
        """Hand what was counted to *write* (rows of minute, series, label, bucket, value);
        keep it for the next try if that raises."""
        self._sample_depth()
        with self._lock:
            taken, self._pending = self._pending, defaultdict(float)
        if not taken:
            return
        rows: list[list[Any]] = [
            [datetime.fromtimestamp(minute, UTC), series, label, bucket, value]
            for (minute, series, label, bucket), value in sorted(taken.items())
        ]
        try:
            write(rows)
        except Exception:
            self._put_back(taken)
            raise

    def _put_back(self, taken: dict[Key, float]) -> None:
        oldest = int(time.time() - KEEP.total_seconds())
        with self._lock:
            for key, value in taken.items():
                if key[0] < oldest:
                    continue
                if key[1] == MAXED:
                    self._pending[key] = max(self._pending.get(key, 0.0), value)
                else:
                    self._pending[key] += value

    def _sample_depth(self) -> None:
        """Once a minute, the READY tasks of each queue (the most this minute saw)."""
        minute = int(time.time()) // 60 * 60
        if self.depths is None or minute == self._sampled_minute:
            return
        try:
            figures = self.depths.read()
        except Exception:
            log.warning("activity_depth_not_read", exc_info=True)
            return
        self._sampled_minute = minute
        with self._lock:
            for figure in figures:
                key = (minute, MAXED, figure.queue, 0)
                self._pending[key] = max(self._pending.get(key, 0.0), float(figure.ready))
