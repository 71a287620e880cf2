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
from typing import Any

from django.db import transaction
from django.utils import timezone

from socketsvc.models import TaskRecord, TaskStatus, WorkflowRecord, WorkflowStatus
from socketsvc.tasks import entries
from socketsvc.tasks.compat import TaskResultDoesNotExist, task_backends
from socketsvc.tasks.wake import cancel_hint
from socketsvc.tasks.workflows import shapes
from socketsvc.tasks.workflows.fanin import ON_ERROR, cancel_not_started


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
    """
    using = _database(backend)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with transaction.atomic(using=using):
        workflow = (
            WorkflowRecord.objects.using(using).select_for_update().filter(id=workflow_id).first()
        )
        if workflow is None:
            raise WorkflowDoesNotExist(workflow_id)
        now = timezone.now()  # once it is ours: a claim that came first has a claim time before
        running: list[str] = []
        if workflow.status == WorkflowStatus.RUNNING:
            workflow.status, workflow.finished_at = WorkflowStatus.CANCELLED, now
            workflow.reason = {"cancelled_by": by} if by else {"cancelled": True}
            workflow.save(update_fields=["status", "finished_at", "reason"])
            # Running steps first (a step finishing now holds its row, then a following one).
            steps = TaskRecord.objects.using(using).filter(
                workflow_id=workflow_id, status=TaskStatus.RUNNING, cancel_requested_at__isnull=True
            )
            running = list(steps.values_list("id", flat=True))
            steps.filter(id__in=running).update(cancel_requested_at=now)
            cancel_not_started(
                workflow_id,
                entries.cancelled_entry(
                    f"before it started: its workflow was cancelled at {stamp}"
                ),
                using,
            )
    for record_id in running:
        transaction.on_commit(lambda record_id=record_id: cancel_hint(record_id), using=using)  # type: ignore[misc]
    return get_workflow(workflow_id, backend)


def prunable(cutoff: datetime, using: str, batch: int) -> Iterator[list[str]]:
    """Yield, *batch* at a time, the workflows that finished before *cutoff* and have no step
    left to run (an on_error step may still run after its workflow failed)."""
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
        busy = set(
            TaskRecord.objects.using(using)
            .filter(workflow_id__in=ids)
            .exclude(status__in=(TaskStatus.SUCCESSFUL, TaskStatus.FAILED))
            .values_list("workflow_id", flat=True)
        )
        done = [workflow_id for workflow_id in ids if workflow_id not in busy]
        if done:
            yield done


def get_step_workflow(result_id: str, backend: str = "default") -> WorkflowResult | None:
    """Return the workflow a task result is a step of (None if it is not one)."""
    using = _database(backend)
    found = TaskRecord.objects.using(using).filter(id=result_id).values_list("workflow_id").first()
    if found is None:
        raise TaskResultDoesNotExist(result_id)
    return get_workflow(found[0], backend) if found[0] else None
