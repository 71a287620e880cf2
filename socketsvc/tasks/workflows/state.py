"""Where a workflow stands, read from any process; cancelling it.

``get_workflow(id)`` returns a :class:`WorkflowResult`: the workflow's status
(RUNNING, SUCCESSFUL, FAILED, CANCELLED), its steps in the order written (each
a task result id, its task and status: WAITING for a step whose earlier steps
have not all succeeded yet), and once SUCCESSFUL its return value: the last
step's result, or the list of results of a group that ends it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from socketsvc.db import vendors
from socketsvc.models import TaskRecord, TaskStatus, WorkflowRecord, WorkflowStatus
from socketsvc.tasks import entries
from socketsvc.tasks.compat import task_backends
from socketsvc.tasks.wake import cancel_hint
from socketsvc.tasks.workflows import shapes
from socketsvc.tasks.workflows.fanin import ON_ERROR, cancel_not_started

# A cancel that lost a lock race (a deadlock) is tried again this many times in all.
_CONFLICT_TRIES = 3


class WorkflowDoesNotExist(LookupError):
    """No workflow has that id."""


@dataclass(frozen=True)
class WorkflowStep:
    """One step of a workflow as it stands."""

    id: str
    task: str
    status: str
    step: int
    on_error: bool = False


@dataclass(frozen=True)
class WorkflowResult:
    """A workflow as last read: ``refresh()`` reads it again."""

    id: str
    name: str
    status: str
    steps: list[WorkflowStep]
    created_at: datetime
    finished_at: datetime | None
    backend: str
    # The failed step ({"step", "task", "error"}), or who cancelled it.
    reason: dict[str, Any] = field(default_factory=dict)
    _return_value: Any = None

    @property
    def is_finished(self) -> bool:
        """Return True once it is SUCCESSFUL, FAILED or CANCELLED."""
        return self.status != WorkflowStatus.RUNNING

    @property
    def return_value(self) -> Any:
        """Return the last step's result (a list for a group at the end); raise ValueError
        unless the workflow is SUCCESSFUL."""
        if self.status != WorkflowStatus.SUCCESSFUL:
            raise ValueError(f"workflow {self.id} is {self.status}: it has no return value")
        return self._return_value

    def refresh(self) -> WorkflowResult:
        """Return the workflow as it stands now."""
        return get_workflow(self.id, self.backend)

    def cancel(self) -> WorkflowResult:
        """Cancel the workflow (see :func:`cancel_workflow`)."""
        return cancel_workflow(self.id, self.backend)


def _database(backend: str) -> str:
    database = getattr(task_backends[backend], "database", None)
    if not isinstance(database, str):
        raise TypeError(f"TASKS[{backend!r}] is not a socketsvc backend")
    return database


def read_workflow(
    workflow: WorkflowRecord, records: Iterable[TaskRecord], using: str
) -> WorkflowResult:
    """Return *workflow*'s result from its row and its steps' rows."""
    rows = sorted(records, key=lambda row: (row.flow or {}).get("step", 0))
    value = None
    if workflow.status == WorkflowStatus.SUCCESSFUL:
        output = workflow.graph.get("output")
        results = {row.id: row.return_value for row in rows}
        missing = [ref for ref in shapes.refs(output) if ref not in results]
        if missing:  # pruned
            results.update(
                TaskRecord.objects.using(using)
                .filter(id__in=missing)
                .values_list("id", "return_value")
            )
        value = shapes.evaluate(output, results)
    return WorkflowResult(
        id=workflow.id,
        name=workflow.name,
        status=str(workflow.status),
        steps=[
            WorkflowStep(
                id=row.id,
                task=row.task_path,
                status=str(row.status),
                step=int((row.flow or {}).get("step", 0)),
                on_error=(row.flow or {}).get("role") == ON_ERROR,
            )
            for row in rows
        ],
        created_at=workflow.created_at,
        finished_at=workflow.finished_at,
        backend=workflow.backend_name,
        reason=dict(workflow.reason or {}),
        _return_value=value,
    )


def steps_of(workflow_id: str, using: str) -> list[TaskRecord]:
    """Return a workflow's step rows, in the order written."""
    rows = TaskRecord.objects.using(using).filter(workflow_id=workflow_id)
    return sorted(rows, key=lambda row: (row.flow or {}).get("step", 0))


def get_workflow(workflow_id: str, backend: str = "default") -> WorkflowResult:
    """Return the workflow *workflow_id* as it stands (from any process).

    Raises :class:`WorkflowDoesNotExist` for an unknown id.
    """
    using = _database(backend)
    workflow = WorkflowRecord.objects.using(using).filter(id=workflow_id).first()
    if workflow is None:
        raise WorkflowDoesNotExist(workflow_id)
    return read_workflow(workflow, steps_of(workflow_id, using), using)


def cancel_workflow(workflow_id: str, backend: str = "default", by: str = "") -> WorkflowResult:
    """Cancel a workflow: steps not started never start, running ones stop as ``cancel()``
    stops a task; all end FAILED with :class:`~socketsvc.tasks.Cancelled`. ``on_error`` does
    not run. A finished workflow is left as it is. Returns the workflow as it now stands.

    The workflow's row first (CANCELLED, and the steps not started failed, in one
    transaction: from then on a claim refuses its steps); then each running step is asked
    to stop on its own row, the workflow's no longer held (a step finishing holds its row,
    then wants the workflow's).
    """
    using = _database(backend)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for attempt in range(_CONFLICT_TRIES):
        try:
            cancelled = _cancel_not_started(workflow_id, using, by, stamp)
            break
        except DatabaseError as exc:
            if not vendors.is_conflict(exc) or attempt == _CONFLICT_TRIES - 1:
                raise
    if cancelled:
        running = TaskRecord.objects.using(using).filter(
            workflow_id=workflow_id, status=TaskStatus.RUNNING, cancel_requested_at__isnull=True
        )
        for record_id in list(running.values_list("id", flat=True)):
            asked = (
                TaskRecord.objects.using(using)
                .filter(id=record_id, status=TaskStatus.RUNNING, cancel_requested_at__isnull=True)
                .update(cancel_requested_at=timezone.now())
            )
            if asked:
                transaction.on_commit(partial(cancel_hint, record_id), using=using)
    return get_workflow(workflow_id, backend)


def _cancel_not_started(workflow_id: str, using: str, by: str, stamp: str) -> bool:
    """Mark the workflow CANCELLED and fail its steps not started; False if it had ended."""
    with transaction.atomic(using=using):
        workflow = (
            WorkflowRecord.objects.using(using).select_for_update().filter(id=workflow_id).first()
        )
        if workflow is None:
            raise WorkflowDoesNotExist(workflow_id)
        if workflow.status != WorkflowStatus.RUNNING:
            return False
        # Once it is ours: a claim that came first has a claim time before this.
        workflow.status, workflow.finished_at = WorkflowStatus.CANCELLED, timezone.now()
        workflow.reason = {"cancelled_by": by} if by else {"cancelled": True}
        workflow.save(update_fields=["status", "finished_at", "reason"])
        cancel_not_started(
            workflow_id,
            entries.cancelled_entry(f"before it started: its workflow was cancelled at {stamp}"),
            using,
        )
        return True


def prunable(cutoff: datetime, using: str, batch: int) -> Iterator[list[str]]:
    """Yield, *batch* at a time, the workflows that finished before *cutoff* and whose steps
    all finished before it too (an on_error step runs after its workflow failed)."""
    after = ""
    while True:
        ids = list(
            WorkflowRecord.objects.using(using)
            .filter(finished_at__lt=cutoff, id__gt=after)
            .exclude(status=WorkflowStatus.RUNNING)
            .order_by("id")
            .values_list("id", flat=True)[:batch]
        )
        if not ids:
            return
        after = ids[-1]
        # A step left to run, or one that finished since (an on_error step), keeps it.
        unfinished = ~Q(status__in=(TaskStatus.SUCCESSFUL, TaskStatus.FAILED))
        busy = set(
            TaskRecord.objects.using(using)
            .filter(unfinished | Q(finished_at__gte=cutoff), workflow_id__in=ids)
            .values_list("workflow_id", flat=True)
        )
        done = [workflow_id for workflow_id in ids if workflow_id not in busy]
        if done:
            yield done
