"""The periodic schedules as ``socketctl schedules`` shows them: code and database together."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone

from socketsvc.models import ScheduleRecord, TaskRecord
from socketsvc.tasks.periodic import Schedule, discover


def _definition(schedule: Schedule | None, row: ScheduleRecord | None) -> dict[str, Any]:
    """Return what a schedule is: from the code if it declares it, else from the database."""
    if schedule is not None:
        return {
            "task": schedule.task_path,
            "expression": schedule.expression,
            "timezone": schedule.zone,
            "catch_up": schedule.catch_up,
            "overlap": schedule.overlap,
        }
    assert row is not None
    return {
        "task": row.task_path,
        "expression": row.expression,
        "timezone": row.timezone,
        "catch_up": row.catch_up,
        "overlap": row.overlap,
    }


def _last_run(name: str) -> dict[str, Any] | None:
    run = TaskRecord.objects.filter(schedule=name).order_by("-enqueued_at").first()
    if run is None:
        return None
    return {"id": run.id, "status": run.status, "enqueued_at": run.enqueued_at.isoformat()}


def list_schedules() -> list[dict[str, Any]]:
    """Return every schedule declared in code or recorded by a daemon, with its state."""
    declared = {schedule.name: schedule for schedule in discover()}
    rows = {row.name: row for row in ScheduleRecord.objects.all()}
    listed = []
    now = timezone.now()
    for name in sorted(declared.keys() | rows.keys()):
        schedule, row = declared.get(name), rows.get(name)
        definition = _definition(schedule, row)
        enabled = row.enabled if row is not None else True
        next_run = None
        if schedule is not None and enabled:
            after = max(now, row.last_slot) if row is not None and row.last_slot else now
            zone = ZoneInfo(definition["timezone"])
            next_run = schedule.next_after(after).astimezone(zone).isoformat()
        listed.append(
            {
                "name": name,
                **definition,
                "enabled": enabled,
                "next_run": next_run,
                "last_run": _last_run(name),
                "declared_in_code": schedule is not None,
                "recorded_by_a_daemon": row is not None,
            }
        )
    return listed
