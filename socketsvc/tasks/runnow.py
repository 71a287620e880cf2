"""Run a periodic task now, outside its slots (the admin's "run now", ``socketctl``)."""

from __future__ import annotations

from django.db import transaction

from socketsvc.models import ScheduleRecord, TaskRecord
from socketsvc.tasks.backend import load_task
from socketsvc.tasks.daemon.scheduler import enqueue_run
from socketsvc.tasks.periodic import schedules
from socketsvc.tasks.wake import wake


def run_now(row: ScheduleRecord) -> TaskRecord:
    """Enqueue one run of the schedule *row* names, with its declared arguments.

    Raises LookupError if the code no longer declares that schedule.
    """
    load_task(row.task_path)  # importing the task's module declares its schedules
    declared = {schedule.name: schedule for schedule in schedules()}
    schedule = declared.get(row.name)
    if schedule is None:
        raise LookupError(f"schedule {row.name!r} is no longer declared in the code")
    database = str(getattr(schedule.task.get_backend(), "database", "default"))
    record = enqueue_run(schedule, database, None)
    queue = schedule.task.queue_name
    # As enqueue() does: a wake before the commit finds no row.
    transaction.on_commit(lambda: wake(queue), using=database)
    return record
