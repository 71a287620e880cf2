"""Settings for every benchmarked server: the demo project, tuned by environment variables.

``BENCH_CONN_MAX_AGE``, ``BENCH_CONN_HEALTH_CHECKS`` (the demo: 60 and on) and
``BENCH_DB_CHECK_AFTER_IDLE`` (default 1.0, socketsvc's default) let one run
compare connection policies; the database comes from ``DATABASE_URL`` as in
the demo. ``DEBUG`` is off and the middleware list is empty so the Django
view behind gunicorn pays only for what the other servers pay for too.

``BENCH_TASKS`` picks the Tasks backend of the task benchmark
(:mod:`bench.taskbench`), serving the one queue ``bench``: ``socketsvc``
(the daemon's task runner, ``BENCH_TASK_WORKERS`` threads, default 2),
``db`` (django-tasks-db, run by ``manage.py db_worker``) or ``rq``
(django-tasks-rq on Redis database ``BENCH_RQ_REDIS_DB``, run by
``manage.py rqworker``). Unset, the demo's ``TASKS`` stay as they are.

Observation (:mod:`bench.observing`): ``BENCH_METRICS`` ``0`` or ``1`` turns
the daemon's Prometheus metrics off or on (unset: socketsvc's default, on when
``prometheus_client`` is installed). ``BENCH_OTEL=1`` installs the
OpenTelemetry SDK in the process, as a project with tracing on does: a
``TracerProvider`` whose spans go to a ``BatchSpanProcessor`` and on to an
exporter that drops them (the spans are built, batched and handed over; no
network).
"""

import os
from dataclasses import fields

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, SOCKETSVC, VAR_DIR
from socketsvc.conf import Config

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
MIDDLEWARE: list[str] = []
# The admin needs its middleware; nothing here serves the admin.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]
ROOT_URLCONF = "bench.urls"

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("BENCH_CONN_MAX_AGE", "0")),
        conn_health_checks=os.environ.get("BENCH_CONN_HEALTH_CHECKS") == "1",
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"].setdefault("OPTIONS", {})["charset"] = "utf8mb4"
    DATABASES["default"]["OPTIONS"]["isolation_level"] = "read committed"

SOCKETSVC = {
    **SOCKETSVC,
    "DB_CHECK_AFTER_IDLE": float(os.environ.get("BENCH_DB_CHECK_AFTER_IDLE", "1.0")),
    "IDLE_TIMEOUT": 600.0,
    "MAX_CONNECTIONS": 20_000,
    # The demo's every-minute periodic task would run during the measurements.
    "SCHEDULES": [],
}
# The idle-connections figure holds 10,000 connections from one user.
if "MAX_CONNECTIONS_PER_UID" in {f.name for f in fields(Config)}:
    SOCKETSVC["MAX_CONNECTIONS_PER_UID"] = 20_000

# The task benchmark: one backend per process. Its task runs on the queue
# "bench", which alone the workers serve; the demo's queues stay declared
# because the demo's task modules are imported (and validated) too.
BENCH_TASK_QUEUE = "bench"
_task_queues = ["default", "reports", BENCH_TASK_QUEUE]
_tasks_backend = os.environ.get("BENCH_TASKS", "")
if _tasks_backend == "socketsvc":
    TASKS = {"default": {"BACKEND": "socketsvc.tasks.SocketServiceBackend", "QUEUES": _task_queues}}
    SOCKETSVC["TASK_WORKERS"] = int(os.environ.get("BENCH_TASK_WORKERS", "2"))
    SOCKETSVC["TASK_QUEUES"] = [BENCH_TASK_QUEUE]
elif _tasks_backend == "db":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": _task_queues}}
elif _tasks_backend == "rq":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_rq"]
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": _task_queues}}
    _rq_redis = {
        "HOST": "127.0.0.1",
        "PORT": 6379,
        "DB": int(os.environ.get("BENCH_RQ_REDIS_DB", "14")),
    }
    RQ_QUEUES = dict.fromkeys(_task_queues, _rq_redis)
elif _tasks_backend:
    raise ImproperlyConfigured(f"BENCH_TASKS={_tasks_backend!r}: use socketsvc, db or rq")

# Observation: the daemon's metrics and OpenTelemetry tracing (bench.observing).
_metrics = os.environ.get("BENCH_METRICS", "")
if _metrics in ("0", "1"):
    SOCKETSVC["METRICS"] = _metrics == "1"
elif _metrics:
    raise ImproperlyConfigured(f"BENCH_METRICS={_metrics!r}: use 0 or 1")
if os.environ.get("BENCH_OTEL") == "1":
    from collections.abc import Sequence

    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DroppingExporter(SpanExporter):
        """Takes every batch of spans and keeps none of them."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    _provider = TracerProvider()
    _provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    trace.set_tracer_provider(_provider)
