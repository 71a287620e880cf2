"""Task results in the admin: a changelist that updates itself, the detail, cancel and run again.

The changelist and the detail page show a progress bar per task; while a
task is READY or RUNNING, a small script asks ``<changelist>/live/?id=...``
once a second and updates its bar, status, times and attempts in place, so
the page never needs a reload. Every time is written as the admin writes a
read-only date (``DATETIME_FORMAT`` in the active time zone), on the first
render and in each update alike. Results are read-only, so a task's page is
titled by what it shows ("Task stock_count (3f2a1b2c)"), not "View task
result"; staff with the change permission may cancel tasks and run them again
(as new tasks with the same arguments).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value, flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from socketsvc.models import TaskRecord, TaskStatus
from socketsvc.tasks.limits import summary, waiting_reason

_ACTIVE = (TaskStatus.WAITING, TaskStatus.READY, TaskStatus.RUNNING)


def status_badge(status: str, label: str) -> SafeString:
    """Return a status as the admin's coloured badge (the page's script updates it)."""
    return format_html(
        '<span class="socketsvc-status socketsvc-status-{}" data-socketsvc-field="status">'
        "{}</span>",
        status.lower(),
        label,
    )


def progress_percent(record: TaskRecord) -> int | None:
    """Return 0..100 for a task with a known total (a finished success is 100)."""
    if record.status == TaskStatus.SUCCESSFUL:
        return 100
    if record.progress_done is None or not record.progress_total:
        return None
    return max(0, min(100, round(100 * record.progress_done / record.progress_total)))


def admin_time(value: datetime | None) -> str:
    """Return *value* as the admin shows a read-only DateTimeField (``""`` for none).

    The admin's own ``display_for_value``, whose datetime branch is that of
    ``display_for_field`` (Django 5.2 and 6.1 alike): the active time zone, then
    ``DATETIME_FORMAT`` in the active language. A time the script writes in place thus
    reads the same as the ones Django rendered around it."""
    return display_for_value(value, "")


def live_state(record: TaskRecord) -> dict[str, Any]:
    """Return what the page updates in place for one task."""
    return {
        "status": record.status,
        "status_label": record.get_status_display(),
        "percent": progress_percent(record),
        "progress": progress_text(record),
        "started_at": admin_time(record.started_at),
        "finished_at": admin_time(record.finished_at),
        "duration": duration_text(record),
        "attempts": record.attempts,
        "active": record.status in _ACTIVE,
    }


def progress_text(record: TaskRecord) -> str:
    """Return ``done / total — note`` (or what is known of it)."""
    if record.progress_done is None:
        return ""
    text = str(record.progress_done)
    if record.progress_total is not None:
        text += f" / {record.progress_total}"
    if record.progress_note:
        text += f" — {record.progress_note}"
    return text


def duration_text(record: TaskRecord) -> str:
    """Return the last run's duration as ``1.234 s``, or ``""``."""
    seconds = record.duration
    return "" if seconds is None else f"{seconds:.3f} s"


def _pretty(value: Any) -> SafeString:
    return format_html("<pre class='socketsvc-json'>{}</pre>", json.dumps(value, indent=2))


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[TaskRecord]
else:
    _ModelAdmin = admin.ModelAdmin


ENDINGS = {
    "socketsvc.tasks.TimeLimitExceeded": "time limit",
    "socketsvc.tasks.TaskExpired": "expired",
    "socketsvc.tasks.Cancelled": "cancelled",
    "socketsvc.tasks.WorkerLost": "daemon lost",
    "socketsvc.tasks.ResultNotStored": "result not stored",
}


class HeldBackFilter(admin.SimpleListFilter):
    """READY tasks by what holds them back."""

    title = "held back by"
    parameter_name = "held"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("rate", "rate limit"),
            ("concurrency", "concurrency limit"),
            ("queue", "queue limit"),
            ("lock", "lock key"),
            ("not_due", "not due yet"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value is None:
            return None
        ready = queryset.filter(status=TaskStatus.READY)
        if value == "not_due":
            return ready.filter(waiting="", available_at__gt=timezone.now())
        if value == "queue":
            return ready.filter(waiting__startswith="queue ")
        return ready.filter(waiting=value)


class EndedByFilter(admin.SimpleListFilter):
    """FAILED tasks by what ended them: a time limit, expiry, a cancel, a lost daemon."""

    title = "ended by"
    parameter_name = "ended"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(path.rsplit(".", 1)[-1], text) for path, text in ENDINGS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        paths = {path.rsplit(".", 1)[-1]: path for path in ENDINGS}
        if value not in paths:
            return None
        return queryset.filter(status=TaskStatus.FAILED, errors__icontains=f'"{paths[value]}"')


@admin.register(TaskRecord)
class TaskRecordAdmin(_ModelAdmin):
    """Task results: watch them, read them, cancel them, run them again."""

    list_display = [
        "short_id",
        "task_name",
        "status_badge",
        "queue_name",
        "priority",
        "enqueued_at",
        "started_cell",
        "finished_cell",
        "duration_cell",
        "attempts_cell",
        "progress_bar",
        "held_or_ended",
    ]
    list_filter = ["status", HeldBackFilter, EndedByFilter, "queue_name", "task_path"]
    search_fields = ["=id", "task_path"]
    date_hierarchy = "enqueued_at"
    actions = ["cancel_tasks", "run_again"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "task_path",
                    "status_badge",
                    "progress_bar",
                    "workflow_link",
                    "backend_name",
                ]
            },
        ),
        ("Queue", {"fields": ["queue_name", "priority", "run_after", "available_at"]}),
        (
            "Runs",
            {
                "fields": [
                    "enqueued_at",
                    "started_cell",
                    "finished_cell",
                    "duration_cell",
                    "attempts_cell",
                    "max_attempts",
                    "worker_ids",
                    "cancel_requested_at",
                ]
            },
        ),
        (
            "Controls",
            {
                "fields": [
                    "unique_key",
                    "lock_key",
                    "limits_text",
                    "expires_at",
                    "held_or_ended",
                ]
            },
        ),
        ("Arguments", {"fields": ["arguments"]}),
        ("Result", {"fields": ["result", "error_list"]}),
    ]

    class Media:
        css = {"all": ["socketsvc/admin.css"]}
        js = ["socketsvc/tasks.js"]

    # -- read-only --------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tasks are enqueued by code, not typed in."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A task's page is a view, never a form: a POST to it is refused (a save would write
        the whole row over the daemon's). The actions still need the change permission."""
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """Every field is read-only: a result is a record of what happened."""
        return list(flatten_fieldsets(self.fieldsets))

    def render_change_form(  # noqa: PLR0917 (Django's signature)
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        """Show no save buttons (nothing is editable), and title the page by its task.

        Django would title it "View task result" over the task's ``str()``; the page can never
        be anything but a view, so the title is the task's ``str()`` (its name and short id,
        as the changelist's columns show them), which the breadcrumbs, the history and the
        delete pages use too. (The status is left out: the page updates it in place, a title
        would go stale.)"""
        context.update(
            show_save=False, show_save_and_continue=False, show_save_and_add_another=False
        )
        if obj is not None:
            context.update(title=str(obj), subtitle=None)
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- columns ------------------------------------------------------------------

    @admin.display(description="id", ordering="id")
    def short_id(self, record: TaskRecord) -> str:
        """Return the id's first 8 digits (the link opens the whole result)."""
        return record.id[:8]

    @admin.display(description="task", ordering="task_path")
    def task_name(self, record: TaskRecord) -> str:
        return record.task_name

    @admin.display(description="status", ordering="status")
    def status_badge(self, record: TaskRecord) -> SafeString:
        return status_badge(record.status, record.get_status_display())

    @admin.display(description="started", ordering="started_at")
    def started_cell(self, record: TaskRecord) -> SafeString:
        return self._live_cell(record, "started_at", admin_time(record.started_at))

    @admin.display(description="finished", ordering="finished_at")
    def finished_cell(self, record: TaskRecord) -> SafeString:
        return self._live_cell(record, "finished_at", admin_time(record.finished_at))

    @admin.display(description="duration")
    def duration_cell(self, record: TaskRecord) -> SafeString:
        return self._live_cell(record, "duration", duration_text(record))

    @admin.display(description="attempts")
    def attempts_cell(self, record: TaskRecord) -> SafeString:
        return self._live_cell(record, "attempts", str(record.attempts))

    @staticmethod
    def _live_cell(record: TaskRecord, field: str, text: str) -> SafeString:
        return format_html('<span data-socketsvc-field="{}">{}</span>', field, text)

    @admin.display(description="progress")
    def progress_bar(self, record: TaskRecord) -> SafeString:
        state = live_state(record)
        percent = state["percent"]
        return format_html(
            '<div class="socketsvc-progress" data-socketsvc-task="{}" data-active="{}" '
            'data-socketsvc-live="{}"><div class="socketsvc-progress-track">'
            '<div class="socketsvc-progress-fill" style="width: {}%"></div></div>'
            '<span class="socketsvc-progress-text" data-socketsvc-field="progress">{}</span>'
            "</div>",
            record.id,
            "1" if state["active"] else "0",
            reverse(f"{self.admin_site.name}:socketsvc_taskrecord_live"),
            0 if percent is None else percent,
            state["progress"],
        )

    @admin.display(description="workflow")
    def workflow_link(self, record: TaskRecord) -> SafeString | str:
        """Link to the workflow this task is a step of (its graph), if it is one."""
        if not record.workflow_id:
            return "-"
        url = reverse(
            f"{self.admin_site.name}:socketsvc_workflowrecord_change", args=[record.workflow_id]
        )
        step = (record.flow or {}).get("step", 0) + 1
        role = "on error" if (record.flow or {}).get("role") == "on_error" else f"step {step}"
        return format_html('<a href="{}">{}</a> ({})', url, record.workflow_id[:8], role)

    @admin.display(description="limits")
    def limits_text(self, record: TaskRecord) -> str:
        return summary(record.limits or {}) or "-"

    @admin.display(description="held back / ended by")
    def held_or_ended(self, record: TaskRecord) -> str:
        """Why a READY task waits (rate, concurrency, lock, not due), or what ended a FAILED
        one (time limit, expiry, cancel, lost daemon)."""
        if record.status == TaskStatus.READY:
            return waiting_reason(record) or "-"
        if record.status == TaskStatus.FAILED and record.errors:
            last = record.errors[-1]["exception_class_path"]
            return ENDINGS.get(last, "an error")
        return "-"

    @admin.display(description="args and kwargs")
    def arguments(self, record: TaskRecord) -> SafeString:
        return _pretty({"args": record.args, "kwargs": record.kwargs})

    @admin.display(description="return value")
    def result(self, record: TaskRecord) -> SafeString | str:
        if record.status != TaskStatus.SUCCESSFUL:
            return "-"
        return _pretty(record.return_value)

    @admin.display(description="errors")
    def error_list(self, record: TaskRecord) -> SafeString | str:
        if not record.errors:
            return "-"
        return format_html_join(
            "",
            "<div class='socketsvc-error'><strong>Attempt {}: {}</strong><pre>{}</pre></div>",
            (
                (n, error["exception_class_path"], error["traceback"])
                for n, error in enumerate(record.errors, 1)
            ),
        )

    # -- live updates ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        """Add the JSON the page polls for live updates."""
        return [
            path(
                "live/",
                self.admin_site.admin_view(self.live_view),
                name="socketsvc_taskrecord_live",
            ),
            *super().get_urls(),
        ]

    def live_view(self, request: HttpRequest) -> HttpResponse:
        """Return the live state of the tasks named by ``?id=`` (at most 200)."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "permission denied"}, status=403)
        ids = request.GET.getlist("id")[:200]
        records = TaskRecord.objects.filter(id__in=ids)
        return JsonResponse({record.id: live_state(record) for record in records})

    # -- actions -------------------------------------------------------------------

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        """Cancel each selected task that has not finished."""
        from socketsvc.tasks import cancel

        stopped = 0
        for record in queryset.filter(status__in=_ACTIVE):
            cancel(record.id, backend=record.backend_name)
            stopped += 1
        self.message_user(
            request,
            f"Asked {stopped} task(s) to stop: queued ones never run, running ones stop at "
            "their next progress report.",
            messages.SUCCESS if stopped else messages.WARNING,
        )

    @admin.action(description="Run selected tasks again", permissions=["change"])
    def run_again(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        """Enqueue each selected task anew, with the same arguments, queue and priority."""
        from socketsvc.tasks.backend import load_task

        links = []
        for record in queryset:
            try:
                task = load_task(record.task_path).using(
                    queue_name=record.queue_name,
                    priority=record.priority,
                    backend=record.backend_name,
                )
            except (ImportError, TypeError) as exc:
                self.message_user(request, f"{record.id[:8]}: {exc}", messages.ERROR)
                continue
            fresh = task.enqueue(*record.args, **record.kwargs)
            url = reverse(f"{self.admin_site.name}:socketsvc_taskrecord_change", args=[fresh.id])
            links.append((url, fresh.id[:8]))
        if links:
            self.message_user(
                request,
                format_html(
                    "Queued again as {}.",
                    format_html_join(", ", '<a href="{}">{}</a>', links),
                ),
                messages.SUCCESS,
            )
