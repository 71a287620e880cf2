"""What must survive a crash is a row: tasks and their results, and the daemons that run them."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Case, F, Q, When


class TaskStatus(models.TextChoices):
    """The Tasks framework's statuses, stored as their names."""

    READY = "READY", "Ready"
    RUNNING = "RUNNING", "Running"
    FAILED = "FAILED", "Failed"
    SUCCESSFUL = "SUCCESSFUL", "Successful"
    # A workflow's step whose earlier steps have not all succeeded yet: never claimed. The
    # framework knows it as READY (it has not started).
    WAITING = "WAITING", "Waiting for earlier steps"


class TaskRecord(models.Model):
    """One enqueued task: what to run, its state, every attempt's errors, its result."""

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    task_path = models.CharField("task", max_length=255, db_index=True)
    queue_name = models.CharField("queue", max_length=64)
    backend_name = models.CharField("backend", max_length=64)
    priority = models.SmallIntegerField(default=0)
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.READY)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    run_after = models.DateTimeField(null=True, blank=True)
    # When it may next start: enqueued_at, run_after, or a retry's backoff.
    available_at = models.DateTimeField()
    enqueued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    max_attempts = models.PositiveSmallIntegerField(default=1)
    worker_ids = models.JSONField(default=list)
    errors = models.JSONField(default=list)
    return_value = models.JSONField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    # How many times it was claimed: with claimed_by, the fencing token every write
    # about a run is conditional on (a run that lost its claim can record nothing).
    claims = models.PositiveIntegerField(default=0)
    progress_done = models.BigIntegerField(null=True, blank=True)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_note = models.CharField(max_length=255, blank=True, default="")
    progress_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # A periodic run: its schedule, and the slot it runs for (none for "run now").
    schedule = models.CharField(max_length=200, blank=True, default="")
    slot = models.DateTimeField(null=True, blank=True)
    # Controls (socketsvc.tasks.limits): the keys of this call, when it expires, and the
    # limits it runs under (concurrency, rate, time limits), as declared when enqueued.
    unique_key = models.CharField(max_length=200, null=True, blank=True)
    # The unique key while the task is READY or RUNNING, else NULL: the database's own
    # index keeps one such task per key (a generated column, as MySQL has no partial index).
    unique_active = models.GeneratedField(
        expression=Case(
            When(status__in=["READY", "RUNNING"], then=F("unique_key")),
            default=None,
            output_field=models.CharField(max_length=200, null=True),
        ),
        output_field=models.CharField(max_length=200, null=True),
        db_persist=True,
    )
    lock_key = models.CharField(max_length=200, null=True, blank=True, db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    limits = models.JSONField(default=dict, blank=True)
    # Why a READY task is held back ("rate", "concurrency", "lock", "queue rate", ...).
    waiting = models.CharField(max_length=32, blank=True, default="")
    # A workflow's step (socketsvc.tasks.workflows): its workflow, how many of the steps
    # it follows have yet to succeed (it is WAITING until none), and its place in the
    # graph ({"step": n, "next": [ids], "input": shape, "receive": how, "role": ...}).
    workflow_id = models.CharField(max_length=32, null=True, blank=True, db_index=True)
    pending = models.PositiveIntegerField(default=0)
    flow = models.JSONField(default=dict, blank=True)
    # The W3C trace context of the code that enqueued it ({"traceparent": ..., "tracestate":
    # ...}), which its runs continue (socketsvc.observe.tracing); None when not traced.
    trace = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "socketsvc_task"
        verbose_name = "task result"
        ordering = ["-enqueued_at"]
        indexes = [
            # The claim: READY rows in the order they run (priority first), so the
            # database reads (and locks) only the row it takes.
            models.Index(
                fields=["status", "-priority", "available_at", "enqueued_at"],
                name="socketsvc_task_claim",
            ),
            # When the next task becomes due.
            models.Index(fields=["status", "available_at"], name="socketsvc_task_due"),
            models.Index(fields=["finished_at"], name="socketsvc_task_finished"),
            models.Index(fields=["claimed_by", "status"], name="socketsvc_task_claimed"),
            models.Index(fields=["schedule", "status"], name="socketsvc_task_schedule"),
            # Tasks that expired before they started.
            models.Index(fields=["status", "expires_at"], name="socketsvc_task_expiry"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__gte=-100) & Q(priority__lte=100),
                name="socketsvc_task_priority_range",
            ),
            # One run per slot of a schedule, however many daemons decide it.
            models.UniqueConstraint(
                fields=["schedule", "slot"], name="socketsvc_task_one_per_slot"
            ),
            # One READY or RUNNING task per unique key of a task function.
            models.UniqueConstraint(
                fields=["task_path", "unique_active"], name="socketsvc_task_unique_active"
            ),
        ]

    def __str__(self) -> str:
        return f"Task {self.task_name} ({self.id[:8]})"  # as its admin page is titled

    @property
    def task_name(self) -> str:
        """Return the task function's name (the last part of its path)."""
        return self.task_path.rsplit(".", 1)[-1]

    @property
    def attempts(self) -> int:
        """Return how many times it was started."""
        return len(self.worker_ids)

    @property
    def duration(self) -> float | None:
        """Return seconds from the last start to the end (or None)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def progress(self) -> dict[str, Any] | None:
        """Return ``{"done", "total", "note"}`` once the task reported progress."""
        if self.progress_done is None:
            return None
        return {
            "done": self.progress_done,
            "total": self.progress_total,
            "note": self.progress_note,
        }


class DaemonRecord(models.Model):
    """One daemon process that runs tasks; its heartbeat tells others it is alive."""

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    # With the hostname, tells whether a pid can be checked from here.
    boot_id = models.CharField(max_length=64, blank=True, default="")
    pid_namespace = models.CharField(max_length=64, blank=True, default="")
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    # Its lease, by the database's clock: past it, others may run its tasks again.
    lease_expires_at: models.DateTimeField[Any, Any] = models.DateTimeField(null=True, blank=True)
    stopped_at: models.DateTimeField[Any, Any] = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "socketsvc_worker"
        verbose_name = "task daemon"
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class LimitRecord(models.Model):
    """A limit shared by every daemon: its row is locked by each claim it decides.

    ``task:<path>`` (a task's concurrency and rate), ``queue:<name>`` (a
    queue's), ``lock:<key>`` (tasks with that lock key). ``starts`` holds the
    latest start times a rate counts (at most its count of them).
    """

    key = models.CharField(primary_key=True, max_length=255)
    starts = models.JSONField(default=list)
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "socketsvc_limit"
        verbose_name = "limit"

    def __str__(self) -> str:
        return self.key


class WorkflowStatus(models.TextChoices):
    """Where a workflow stands."""

    RUNNING = "RUNNING", "Running"
    SUCCESSFUL = "SUCCESSFUL", "Successful"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


class WorkflowRecord(models.Model):
    """A chain, group or chord of tasks enqueued together; its steps are task rows.

    ``pending`` counts the steps whose results make its return value that have
    not succeeded yet: the last of them to succeed, in its own finishing
    transaction, makes the workflow SUCCESSFUL. ``graph`` is what was enqueued,
    as drawn: ``{"tree": ..., "output": shape, "on_error": id}``.
    """

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    name = models.CharField(max_length=200)
    backend_name = models.CharField("backend", max_length=64)
    status = models.CharField(
        max_length=10, choices=WorkflowStatus.choices, default=WorkflowStatus.RUNNING
    )
    pending = models.PositiveIntegerField(default=0)
    steps = models.PositiveIntegerField(default=0)
    graph = models.JSONField(default=dict)
    # Why it failed: the step that failed and its error's class; or who cancelled it.
    reason = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "socketsvc_workflow"
        verbose_name = "workflow"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "finished_at"], name="socketsvc_workflow_done")]

    def __str__(self) -> str:
        return f"Workflow {self.name} ({self.id[:8]})"


class ScheduleRecord(models.Model):
    """A periodic task as last declared, its pause switch, and the last slot decided."""

    name = models.CharField(primary_key=True, max_length=200)
    task_path = models.CharField("task", max_length=255)
    expression = models.CharField(max_length=100)
    timezone = models.CharField(max_length=64)
    catch_up = models.CharField(max_length=10)
    overlap = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True, help_text="Paused schedules skip their slots.")
    last_slot = models.DateTimeField(null=True, blank=True)
    next_slot = models.DateTimeField(null=True, blank=True)
    declared_at = models.DateTimeField()

    class Meta:
        db_table = "socketsvc_schedule"
        verbose_name = "schedule"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ActivityRecord(models.Model):
    """One figure of one minute of the daemon's activity, for the admin's dashboard.

    Every process of every daemon adds what it counted to the minute's rows
    (``series``: calls, call_errors, started, succeeded, failed, retried,
    cancelled; ``duration`` and ``latency`` per histogram ``bucket``;
    ``depth``, the most READY tasks seen; ``db_down``, seconds an alias was
    down), for a ``label`` (a queue, a database alias, or empty). Rows older
    than a day and an hour are deleted: the table stays small.
    """

    minute = models.DateTimeField()
    series = models.CharField(max_length=16)
    label = models.CharField(max_length=64, blank=True, default="")
    bucket = models.SmallIntegerField(default=0)
    value = models.FloatField(default=0.0)

    class Meta:
        db_table = "socketsvc_activity"
        verbose_name = "activity"
        verbose_name_plural = "dashboard"
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "series", "label", "bucket"], name="socketsvc_activity_one"
            )
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.series} {self.label} {self.bucket}"
