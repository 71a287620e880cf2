"""Periodic schedules in the admin: when each runs next, how its last run went, pause, run now.

The next run and the last run's time read as the admin's own read-only times (last slot,
declared at) do: ``DATETIME_FORMAT`` in the active time zone, not the schedule's zone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from socketsvc.admin.tasks import admin_time
from socketsvc.models import ScheduleRecord, TaskRecord

FIELDS = (
    "name",
    "task_path",
    "expression",
    "timezone",
    "catch_up",
    "overlap",
    "enabled",
    "next_run",
    "last_run_cell",
    "last_slot",
    "declared_at",
)

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[ScheduleRecord]
else:
    _ModelAdmin = admin.ModelAdmin


def declared_names() -> set[str]:
    """Return the names of the schedules the code declares (importing the apps' tasks)."""
    from socketsvc.tasks.periodic import discover

    return {schedule.name for schedule in discover()}


def last_run(schedule: ScheduleRecord) -> TaskRecord | None:
    """Return the schedule's latest run (by slot, then enqueue time)."""
    return TaskRecord.objects.filter(schedule=schedule.name).order_by("-enqueued_at").first()


@admin.register(ScheduleRecord)
class ScheduleRecordAdmin(_ModelAdmin):
    """The schedules the daemons declared: pause and resume them, run one now."""

    list_display = [
        "name",
        "expression",
        "timezone",
        "next_run",
        "last_run_cell",
        "catch_up",
        "overlap",
        "enabled",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "task_path"]
    actions = ["pause", "resume", "run_now"]
    fields = FIELDS

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """Only the pause switch is editable: the rest is declared in code."""
        return [name for name in FIELDS if name != "enabled"]

    class Media:
        css = {"all": ["socketsvc/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Schedules are declared in code (@periodic); the daemon records them."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Only a schedule no code declares any more may be deleted (a daemon would declare
        a declared one again)."""
        if obj is not None and obj.name in declared_names():
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Write the pause switch alone, if it still holds what the form showed: the rest of
        the row is the daemons' (a whole-row save could move last_slot back)."""
        before = form.initial.get("enabled", not obj.enabled)
        ScheduleRecord.objects.filter(pk=obj.pk, enabled=before).update(enabled=obj.enabled)

    @admin.display(description="next run", ordering="next_slot")
    def next_run(self, schedule: ScheduleRecord) -> str:
        if not schedule.enabled:
            return "paused"
        if schedule.next_slot is None:
            return "-"
        return admin_time(schedule.next_slot)

    @admin.display(description="last run")
    def last_run_cell(self, schedule: ScheduleRecord) -> SafeString | str:
        run = last_run(schedule)
        if run is None:
            return "-"
        url = reverse(f"{self.admin_site.name}:socketsvc_taskrecord_change", args=[run.id])
        return format_html(
            '<a href="{}" data-socketsvc-result="{}"><span class="socketsvc-status '
            'socketsvc-status-{}">{}</span> {}</a>',
            url,
            run.id,
            run.status.lower(),
            run.get_status_display(),
            admin_time(run.enqueued_at),
        )

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[ScheduleRecord]) -> None:
        """Pause: their slots pass without a run until resumed (it survives restarts)."""
        count = queryset.update(enabled=False)
        self.message_user(request, f"Paused {count} schedule(s).", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[ScheduleRecord]) -> None:
        """Resume: the next slot runs (the ones passed while paused do not)."""
        count = queryset.update(enabled=True)
        self.message_user(request, f"Resumed {count} schedule(s).", messages.SUCCESS)

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[ScheduleRecord]) -> None:
        """Enqueue one run of each at once, outside its slots."""
        from socketsvc.tasks.runnow import run_now

        links: list[tuple[str, str]] = []
        for schedule in queryset:
            try:
                record = run_now(schedule)
            except (ImportError, TypeError, LookupError) as exc:
                self.message_user(request, f"{schedule.name}: {exc}", messages.ERROR)
                continue
            url = reverse(f"{self.admin_site.name}:socketsvc_taskrecord_change", args=[record.id])
            links.append((url, f"{schedule.name} ({record.id[:8]})"))
        if links:
            self.message_user(
                request,
                format_html(
                    "Queued now: {}.", format_html_join(", ", '<a href="{}">{}</a>', links)
                ),
                messages.SUCCESS,
            )

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        """Keep the three actions; drop bulk delete (a schedule lives in code).

        *action_location* is the parameter Django 6.1 added; older versions never pass it."""
        where = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **where)
        actions.pop("delete_selected", None)
        return actions
