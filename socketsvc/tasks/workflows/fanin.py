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
then other steps' rows (found by a plain read, changed by their ids: on
InnoDB a statement scanning the workflow's steps would wait on every row
being claimed or finished). Rows of READY steps are taken with SKIP LOCKED (a
claim holding one decides by the workflow's row, above); a WAITING row is
held only by a step finishing before it, which waits for nothing held here.
A cancel takes the workflow's row first (there is no own row), so it asks its
running steps to stop only after it let that row go, and cancelling a WAITING
step takes its workflow's row before the step's. A step made READY wakes the
daemon once its transaction commits.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from socketsvc.models import TaskRecord, TaskStatus, WorkflowRecord, WorkflowStatus
from socketsvc.tasks import entries
from socketsvc.tasks.wake import wake
from socketsvc.tasks.workflows import shapes

WAITING, READY = TaskStatus.WAITING, TaskStatus.READY
ON_ERROR = "on_error"


def succeeded(record: TaskRecord, using: str) -> list[str]:
    """*record*'s success was just recorded: move its workflow on; return the queues of the
    steps that became READY (each woken once the transaction commits)."""
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
    _wake_after_commit(queues, using)
    return queues


def _wake_after_commit(queues: list[str], using: str) -> None:
    """Tell the daemon (this process's runner, or over the socket) once the steps made READY
    are committed; a daemon on another host hears it from the database."""
    for queue in sorted(set(queues)):
        transaction.on_commit(partial(wake, queue), using=using)


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
    flow = row.flow or {}
    args, kwargs = shapes.given(
        flow.get("receive", "first"), value, list(row.args), dict(row.kwargs)
    )
    now = timezone.now()
    changes: dict[str, Any] = {"status": READY, "args": args, "kwargs": kwargs, "pending": 0}
    # Due now, or at its own run_after if that is later; its expiry counts from now.
    changes["available_at"] = max(now, row.run_after) if row.run_after is not None else now
    if flow.get("expires") is not None:
        changes["expires_at"] = now + timedelta(seconds=float(flow["expires"]))
    return bool(TaskRecord.objects.using(using).filter(id=row.id, status=WAITING).update(**changes))


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
        _wake_after_commit([handler.queue_name], using)
        return [handler.queue_name]
    return []


def cancel_not_started(
    workflow_id: str, why: dict[str, str], using: str, keep: str | None = None
) -> int:
    """Fail with *why* the steps of a workflow that have not started (but *keep*); return
    how many. Call with the workflow's row locked."""
    now = timezone.now()
    tasks = TaskRecord.objects.using(using).filter(workflow_id=workflow_id)
    # The WAITING steps are found by a plain read and changed by their ids: a statement that
    # scanned the workflow's steps would (on InnoDB) wait on the rows of steps being claimed
    # or finished, whose transactions wait for the workflow's row held here. A WAITING row
    # is held only by a step finishing before it, which waits for nothing held here. They
    # never ran: nothing in their errors yet.
    waiting = list(tasks.filter(status=WAITING).exclude(id=keep or "").values_list("id", flat=True))
    cancelled = (
        TaskRecord.objects.using(using)
        .filter(id__in=waiting, status=WAITING)
        .update(status=TaskStatus.FAILED, finished_at=now, errors=[why], pending=0)
    )
    ready = tasks.filter(status=READY)
    if connections[using].features.has_select_for_update_skip_locked:
        # One being claimed is passed over: the claim sees the workflow ended and fails it.
        ready = ready.select_for_update(skip_locked=True)
    for row in ready:
        row.status, row.finished_at, row.waiting = TaskStatus.FAILED, now, ""
        row.errors = [*row.errors, why]
        row.save(using=using, update_fields=["status", "finished_at", "errors", "waiting"])
        cancelled += 1
    return cancelled


def lock_workflow(workflow_id: str, using: str) -> None:
    """Take a workflow's row (FOR UPDATE) in this transaction."""
    WorkflowRecord.objects.using(using).select_for_update().filter(id=workflow_id).exists()


def may_start(record: TaskRecord, using: str) -> bool:
    """Return whether a claimed step may start: its workflow still runs (or it is the
    workflow's on_error step). Takes the workflow's row with a shared lock, in the claim's
    transaction: a failure or a cancel of the workflow is either seen or waits for the claim."""
    if not record.workflow_id:
        return True
    if (record.flow or {}).get("role") == ON_ERROR:
        return True
    if record.expires_at is not None and record.expires_at <= timezone.now():
        # The claim expires it and fails its workflow, taking the workflow's row for that:
        # a shared lock taken here first would have to become exclusive (and two claims
        # doing so at once deadlock).
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
