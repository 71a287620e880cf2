"""The service's Prometheus metrics: one set for the master and every worker process.

Installed by the daemon at start (``METRICS``, on when ``prometheus_client`` is
installed). Every process of the service writes its figures to files of its own
in one directory (``prometheus_client``'s multiprocess mode): a worker process
that dies, even by SIGKILL, leaves its counters there, so a recycle or a crash
loses nothing and adds no series; the master marks a dead process's gauges gone.
Whoever collects (``socketctl metrics``, ``METRICS_LISTEN``, the view) reads the
directory, so the figures are the service's, not one process's.

Labels are bounded: a method the service does not know is ``(unknown)``, tasks
and queues are the project's own.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Any

import structlog

from socketsvc.observe import depth
from socketsvc.procfs import pid_alive

log = structlog.get_logger(__name__)

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Request and task durations: from a millisecond to a minute.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def available() -> bool:
    """Return True if ``prometheus_client`` can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class Metrics:
    """The metric objects (created once per process, after the directory is set)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # Not in the default registry: the figures are collected from the directory.
        mine: dict[str, Any] = {"registry": None}

        self.requests = Counter(
            "socketsvc_requests",
            "Calls answered, by method and outcome.",
            ["method", "outcome"],
            **mine,
        )
        self.request_duration = Histogram(
            "socketsvc_request_duration_seconds",
            "From a call's arrival to its reply, by method.",
            ["method"],
            buckets=DURATION_BUCKETS,
            **mine,
        )
        self.in_flight = Gauge(
            "socketsvc_requests_in_flight",
            "Calls a handler is running now.",
            multiprocess_mode="livesum",
            **mine,
        )
        self.connections = Gauge(
            "socketsvc_connections", "Open client connections.", multiprocess_mode="livesum", **mine
        )
        self.refused = Counter(
            "socketsvc_connections_refused",
            "Connections refused on arrival, by reason.",
            ["reason"],
            **mine,
        )
        self.evicted = Counter(
            "socketsvc_connections_evicted", "Idle connections closed to make room.", **mine
        )
        self.db_connects = Counter("socketsvc_db_connects", "Database connections opened.", **mine)
        self.db_reconnects = Counter(
            "socketsvc_db_reconnects", "Connections opened to replace one that died.", **mine
        )
        self.db_outages = Counter(
            "socketsvc_db_outages", "Times a database could not be reached.", ["alias"], **mine
        )
        self.db_outage_seconds = Counter(
            "socketsvc_db_outage_seconds", "Time databases could not be reached.", ["alias"], **mine
        )
        self.db_down = Gauge(
            "socketsvc_db_down",
            "1 while a database cannot be reached.",
            ["alias"],
            multiprocess_mode="livemax",
            **mine,
        )
        self.tasks_enqueued = Counter(
            "socketsvc_tasks_enqueued",
            "Tasks enqueued by the service's own processes.",
            ["task", "queue"],
            **mine,
        )
        self.tasks_started = Counter(
            "socketsvc_tasks_started", "Task runs started.", ["task", "queue"], **mine
        )
        self.tasks_finished = Counter(
            "socketsvc_tasks_finished",
            "Tasks finished, by outcome (successful, failed, cancelled, time_limit).",
            ["task", "queue", "outcome"],
            **mine,
        )
        self.task_duration = Histogram(
            "socketsvc_task_duration_seconds",
            "How long a task's run took.",
            ["task", "queue"],
            buckets=DURATION_BUCKETS,
            **mine,
        )
        self.task_latency = Histogram(
            "socketsvc_task_latency_seconds",
            "From when a task could start (enqueued, or its run_after) to its start.",
            ["queue"],
            buckets=DURATION_BUCKETS,
            **mine,
        )
        self.retries = Counter(
            "socketsvc_task_retries",
            "Failed runs that will be tried again.",
            ["task", "queue"],
            **mine,
        )
        self.lost = Counter(
            "socketsvc_task_runs_lost",
            "Runs of a process or daemon that died, taken back.",
            ["queue"],
            **mine,
        )
        self.time_limit_kills = Counter(
            "socketsvc_task_time_limit_kills",
            "Runs stopped by force past their hard time limit or a cancel's grace.",
            ["task", "queue"],
            **mine,
        )
        self.schedule_lag = Gauge(
            "socketsvc_schedule_lag_seconds",
            "How late the last run of a schedule was enqueued after its slot.",
            ["schedule"],
            # Only one process decides the schedules: the live one's last value.
            multiprocess_mode="livemax",
            **mine,
        )
        self.schedule_runs = Counter(
            "socketsvc_schedule_runs", "Runs enqueued for a schedule's slots.", ["schedule"], **mine
        )
        self.restarts = Counter(
            "socketsvc_process_restarts",
            "Worker processes that exited unasked and restarted.",
            **mine,
        )
        self.recycles = Counter(
            "socketsvc_process_recycles",
            "Worker processes replaced on purpose.",
            ["reason"],
            **mine,
        )


def prepare_directory(configured: str | None) -> str:
    """Make the directory every process of this service writes its figures to; return it.

    The service's first process calls this once: a configured directory is
    emptied of an earlier run's files, else a fresh one is made. The worker
    processes find it in the environment.
    """
    if configured:
        os.makedirs(configured, mode=0o700, exist_ok=True)
        for stale in glob.glob(os.path.join(configured, "*.db")):
            os.remove(stale)
        path = configured
    else:
        _remove_orphans()
        path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
    os.environ[DIRECTORY_VARIABLE] = path
    return path


_PREFIX = "socketsvc-metrics-"


def _remove_orphans() -> None:
    """Remove the temporary directories of this user's daemons that died without cleaning
    up (SIGKILL): each is named after its daemon's pid."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{_PREFIX}*-*")):
        pid = os.path.basename(path)[len(_PREFIX) :].split("-", 1)[0]
        try:
            mine = os.stat(path).st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def remove_directory(path: str, configured: str | None) -> None:
    """Remove the figures of a service that stops (a configured directory is kept)."""
    if configured:
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        shutil.rmtree(path, ignore_errors=True)


def install(aliases: tuple[str, ...] = ()) -> Metrics:
    """Create this process's metrics, writing to the directory in the environment.

    Every file this process will write is opened now (one per kind of value), so its
    open files do not grow later: the databases' up/down gauges start at 0 for each
    of *aliases*, and a histogram child opens the histograms' file.
    """
    from prometheus_client import values

    # prometheus_client chose how values are kept when it was first imported; the
    # project may have imported it before the directory was set.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    metrics = Metrics()
    for alias in aliases:
        metrics.db_down.labels(alias).set(0)
    metrics.request_duration.labels("rpc.ping")
    return metrics


def process_dead(pid: int) -> None:
    """A process of the service is gone: its live gauges no longer count."""
    from prometheus_client import multiprocess

    path = os.environ.get(DIRECTORY_VARIABLE)
    if path:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def exposition() -> tuple[bytes, str]:
    """Return the whole service's metrics in the text format, and their content type.

    Every process's figures from the directory, and the queues' from the task
    database (cached; call it inside a unit of work: a handler, a request scope).
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    path = os.environ.get(DIRECTORY_VARIABLE)
    if not path:
        raise RuntimeError("this daemon keeps no metrics (SOCKETSVC['METRICS'])")
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    depths = depth.here()
    if depths is not None:
        registry.register(depth.DepthCollector(depths))
    return generate_latest(registry), CONTENT_TYPE_LATEST
