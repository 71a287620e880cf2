"""The dashboard: the last hour or day of the daemon's work, drawn in the admin.

Linked from the socketsvc app index as "Dashboard" (the changelist of the
activity table, which only staff allowed to view it see). Charts of task
runs started and tasks failed per queue (per minute, or per quarter hour for
the day), queue depth, run duration and start latency
(p50, p99), calls and errors per second, with bands where a database was
down (:mod:`socketsvc.admin.charts`, from :mod:`socketsvc.admin.figures`);
below, the queues as they stand, the daemons that run tasks and the
processes of the one this web server talks to (``rpc.status``). The page
refreshes itself: a small script fetches the figures every few seconds and
swaps them in; without JavaScript, the page reloads every 30 seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString

from socketsvc.admin.charts import Line, chart, number, seconds
from socketsvc.admin.figures import Figures, read
from socketsvc.admin.tasks import admin_time
from socketsvc.client import (
    CallTimeout,
    ProtocolError,
    RemoteError,
    ServiceUnavailable,
    call_with,
)
from socketsvc.models import ActivityRecord
from socketsvc.tasks.compat import task_backends

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[ActivityRecord]
else:
    _ModelAdmin = admin.ModelAdmin

# How long the page waits for the daemon's status before drawing without it.
STATUS_TIMEOUT = 1.0
REFRESH_SECONDS = 5


def _database() -> str:
    """Return the database of the socketsvc task backends (the default one without)."""
    from socketsvc.tasks.backend import SocketServiceBackend

    try:
        for backend in task_backends.all():
            if isinstance(backend, SocketServiceBackend):
                return backend.database
    except Exception:  # noqa: S110 (no TASKS, or a backend that cannot load: the default)
        pass
    return DEFAULT_DB_ALIAS


def charts(figures: Figures) -> list[SafeString]:
    """Return the page's charts for *figures*."""
    times = figures.window.times()
    down = figures.down
    return [
        chart(
            "Task runs started, by queue",
            times,
            [Line(queue, values) for queue, values in figures.started.items()],
            down,
        ),
        chart(
            "Tasks failed, by queue",
            times,
            [Line(queue, values) for queue, values in figures.failed.items()],
            down,
        ),
        chart(
            "Queue depth (READY tasks)",
            times,
            [Line(queue, values) for queue, values in figures.depth.items()],
            down,
        ),
        chart(
            "Task run duration",
            times,
            [Line(name, values) for name, values in figures.duration.items()],
            down,
            seconds,
        ),
        chart(
            "Enqueue to start latency",
            times,
            [Line(name, values) for name, values in figures.latency.items()],
            down,
            seconds,
        ),
        chart(
            "Calls per second; errors",
            times,
            [
                Line("calls", figures.calls),
                Line("errors", figures.errors, "socketsvc-line-bad"),
            ],
            down,
        ),
    ]


def processes() -> dict[str, Any]:
    """Return the processes of the daemon this web server talks to, or why there are none."""
    try:
        status = call_with("rpc.status", None, timeout=STATUS_TIMEOUT)
    except (ServiceUnavailable, CallTimeout, ProtocolError, RemoteError, OSError) as exc:
        return {"error": f"the daemon did not answer ({type(exc).__name__}: {exc})"}
    if not isinstance(status, dict):
        return {"error": "the daemon answered something unexpected"}
    rows = status.get("processes") or [status]
    master = status.get("master")
    return {
        "master": master if isinstance(master, dict) else None,
        "rows": [
            {
                "pid": row.get("pid"),
                "slot": row.get("slot"),
                "state": row.get("state"),
                "busy": f"{row.get('busy_workers', 0)} / {row.get('workers', 0)}",
                "queued": row.get("queued", 0),
                "requests": row.get("requests", 0),
                "rss": f"{(row.get('rss_kib') or 0) / 1024:.1f} MiB",
                "tasks": _task_threads(row.get("tasks")),
            }
            for row in rows
            if isinstance(row, dict)
        ],
    }


def _task_threads(tasks: Any) -> str:
    """Return "running / threads" of a process's task runner (``-`` when not reported)."""
    if not isinstance(tasks, dict):
        return "-"
    return f"{len(tasks.get('running') or [])} / {tasks.get('workers', 0)}"


@admin.register(ActivityRecord)
class DashboardAdmin(_ModelAdmin):
    """The dashboard, as the activity table's changelist (see the module docstring)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        name = request.GET.get("range", "hour")
        figures = read(name, _database())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "socketsvc dashboard",
            "range": figures.window.name,
            "charts": charts(figures),
            "queues": [
                {
                    "queue": queue.queue,
                    "ready": queue.ready,
                    "running": queue.running,
                    "waiting": queue.waiting,
                    "oldest": seconds(queue.oldest_seconds)
                    if queue.oldest_seconds is not None
                    else "-",
                }
                for queue in figures.queues
            ],
            "daemons": [
                {
                    "name": str(daemon),
                    "started": admin_time(daemon.started_at),
                    "heartbeat": admin_time(daemon.heartbeat_at),
                }
                for daemon in figures.daemons
            ],
            "processes": processes(),
            "read_at": admin_time(figures.read_at),
            "refresh": REFRESH_SECONDS,
            "calls_total": number(sum(figures.calls) * figures.window.seconds),
            "started_total": round(sum(sum(values) for values in figures.started.values())),
            "failed_total": round(sum(sum(values) for values in figures.failed.values())),
            **(extra_context or {}),
        }
        template = (
            "admin/socketsvc/dashboard_figures.html"
            if request.GET.get("figures") == "1"
            else "admin/socketsvc/dashboard.html"
        )
        return TemplateResponse(request, template, context)
