"""A workflow moves on inside its steps' own transactions: fan-in, failure, the claim's check.

Each step's row counts, in ``pending``, the steps before it that have not
succeeded yet. A step's success is recorded by one conditional update (still
RUNNING, under its run's claim), so it is recorded once; in that same
transaction each following step's count drops by one, and the step whose
count reaches zero becomes READY with its input written into its arguments.
However many members of a chord finish at the same moment, on however many
hosts, their updates of the callback's row take turns under the row's lock
(every statement reads the latest committed row: READ COMMITTED, Django's
level on MySQL, PostgreSQL's default), and exactly one of them sees zero.

A step that fails for good fails its workflow in the same transaction: the
workflow's row goes from RUNNING to FAILED once, the steps not started are
marked cancelled, and the ``on_error`` step (a row waiting from the start)
becomes READY. A claim takes the workflow's row with a shared lock before it
starts a step, so a step whose workflow ended meanwhile never starts.

Locks are taken in one order: a step's own row, then its workflow's row,
then other steps' rows. Rows of READY steps are taken with SKIP LOCKED (a
claim holding one decides by the workflow's row, above); a WAITING row is
held only by a transaction that holds nothing this one waits for.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import F
from django.utils import timezone

from socketsvc.models import TaskRecord, TaskStatus, WorkflowRecord, WorkflowStatus
from socketsvc.tasks import entries
from socketsvc.tasks.workflows import shapes

WAITING, READY = TaskStatus.WAITING, TaskStatus.READY
ON_ERROR = "on_error"


def succeeded(record: TaskRecord, using: str) -> list[str]:
    """*record*'s success was just recorded: move its workflow on; return the queues of the
    steps that became READY."""
    flow = record.flow or {}
    queues: list[str] = []
    following = list(flow.get("next") or ())
    if following:
        tasks = TaskRecord.objects.using(using)
        tasks.filter(id__in=following, status=WAITING, pending__gt=0).update(
            pending=F("pending") - 1
        )
        for row in tasks.filter(id__in=following, status=WAITING, pending=0):
            if release(row, _input_of(row, using), using):
                queues.append(row.queue_name)
    if flow.get("output"):
        workflows = WorkflowRecord.objects.using(using).filter(
            id=record.workflow_id, status=WorkflowStatus.RUNNING
        )
        workflows.filter(pending__gt=0).update(pending=F("pending") - 1)
        if workflows.filter(pending=0).update(
            status=WorkflowStatus.SUCCESSFUL, finished_at=timezone.now()
        ):
            # Every step succeeded: what still waits is the on_error step, never needed now.
            TaskRecord.objects.using(using).filter(
                workflow_id=record.workflow_id, status=WAITING
            ).delete()
    return queues


def _input_of(row: TaskRecord, using: str) -> Any:
    """Return what *row* receives: the results its input's shape names (all SUCCESSFUL)."""
    shape = (row.flow or {}).get("input")
    named = shapes.refs(shape)
    results = dict(
        TaskRecord.objects.using(using).filter(id__in=named).values_list("id", "return_value")
    )
    return shapes.evaluate(shape, results)


def release(row: TaskRecord, value: Any, using: str) -> bool:
    """Make a WAITING step READY now, passing *value* as it receives its input."""
    args, kwargs = shapes.given(
        (row.flow or {}).get("receive", "first"), value, list(row.args), dict(row.kwargs)
    )
    now = timezone.now()
    return bool(
        TaskRecord.objects.using(using)
        .filter(id=row.id, status=WAITING)
        .update(status=READY, available_at=now, args=args, kwargs=kwargs, pending=0)
    )


def failed(record: TaskRecord, using: str) -> list[str]:
    """*record* just ended FAILED for good (in the transaction holding its row): fail its
    workflow, cancel the steps not started, start ``on_error``; return the queues woken."""
    if not record.workflow_id or (record.flow or {}).get("role") == ON_ERROR:
        return []
    workflow = (
        WorkflowRecord.objects.using(using)
        .select_for_update()
        .filter(id=record.workflow_id, status=WorkflowStatus.RUNNING)
        .first()
    )
    if workflow is None:
        return []
    error = (record.errors or [{}])[-1].get("exception_class_path", "")
    workflow.status, workflow.finished_at = WorkflowStatus.FAILED, timezone.now()
    workflow.reason = {"step": record.id, "task": record.task_path, "error": error}
    workflow.save(update_fields=["status", "finished_at", "reason"])
    on_error = workflow.graph.get("on_error")
    why = entries.cancelled_entry(
        f"before it started: its workflow failed (step {record.id}, "
        f"{record.task_name}, ended with {error})"
    )
    cancel_not_started(workflow.id, why, using, keep=on_error)
    if on_error is None:
        return []
    handler = TaskRecord.objects.using(using).filter(id=on_error, status=WAITING).first()
    info = {"workflow": workflow.id, "step": record.id, "task": record.task_path, "error": error}
    if handler is not None and release(handler, info, using):
        return [handler.queue_name]
    return []


def cancel_not_started(
    workflow_id: str, why: dict[str, str], using: str, keep: str | None = None
) -> int:
    """Fail with *why* the steps of a workflow that have not started (but *keep*); return
    how many. Call with the workflow's row locked."""
    now = timezone.now()
    tasks = TaskRecord.objects.using(using).filter(workflow_id=workflow_id)
    # WAITING steps never ran: nothing in their errors yet.
    cancelled = (
        tasks.filter(status=WAITING)
        .exclude(id=keep or "")
        .update(status=TaskStatus.FAILED, finished_at=now, errors=[why], pending=0)
    )
    ready = tasks.filter(status=READY)
    if connections[using].features.has_select_for_update_skip_locked:
        ready = ready.select_for_update(skip_locked=True)
    for row in ready:
        row.status, row.finished_at, row.waiting = TaskStatus.FAILED, now, ""
        row.errors = [*row.errors, why]
        row.save(using=using, update_fields=["status", "finished_at", "errors", "waiting"])
        cancelled += 1
    return cancelled


def may_start(record: TaskRecord, using: str) -> bool:
    """Return whether a claimed step may start: its workflow still runs (or it is the
    workflow's on_error step). Takes the workflow's row with a shared lock, in the claim's
    transaction: a failure or a cancel of the workflow is either seen or waits for the claim."""
    if not record.workflow_id:
        return True
    if (record.flow or {}).get("role") == ON_ERROR:
        return True
    connection = connections[using]
    quote = connection.ops.quote_name
    share = ""
    if connection.vendor == "postgresql":
        share = " FOR SHARE"
    elif connection.vendor == "mysql":
        share = " LOCK IN SHARE MODE"
    sql = (
        f"SELECT {quote('status')} FROM {quote(WorkflowRecord._meta.db_table)} "  # noqa: S608
        f"WHERE {quote('id')} = %s{share}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [record.workflow_id])
        found = cursor.fetchone()
    return found is not None and found[0] == WorkflowStatus.RUNNING


def refuse(record: TaskRecord, using: str) -> None:
    """Fail a claimed step whose workflow ended before it started (it never starts)."""
    record.status, record.finished_at, record.waiting = TaskStatus.FAILED, timezone.now(), ""
    record.errors = [
        *record.errors,
        entries.cancelled_entry("before it started: its workflow had already ended"),
    ]
    record.save(using=using, update_fields=["status", "finished_at", "errors", "waiting"])
