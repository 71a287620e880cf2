"""Enqueue a compiled workflow: its row and every step's row, in one transaction.

Inside the caller's transaction, like ``enqueue()``: a workflow enqueued in
an ``atomic()`` block that rolls back leaves nothing, and the daemon is woken
once it commits. The first steps are READY; every other step WAITING, with
the count of steps it waits for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from socketsvc.models import TaskRecord, TaskStatus, WorkflowRecord, WorkflowStatus
from socketsvc.tasks import store
from socketsvc.tasks.backend import SocketServiceBackend, to_result
from socketsvc.tasks.compat import task_enqueued
from socketsvc.tasks.limits import limits_of
from socketsvc.tasks.wake import wake
from socketsvc.tasks.workflows import shapes
from socketsvc.tasks.workflows.fanin import ON_ERROR
from socketsvc.tasks.workflows.state import WorkflowResult, read_workflow

if TYPE_CHECKING:
    from socketsvc.tasks.workflows.canvas import Step


def enqueue_plan(plan: shapes.Plan, *, name: str, on_error: Step | None) -> WorkflowResult:
    """Store *plan*'s workflow and steps (and the *on_error* step, waiting); wake the daemon
    after the commit. Returns the workflow's result."""
    steps = [node.step for node in plan.nodes] + ([on_error] if on_error is not None else [])
    backend = _one_database(steps)
    using = backend.database
    now = timezone.now()
    workflow_id = store.new_id()
    # Each a microsecond after the one before: steps due together start in the order written.
    records = [_record(node.step, now + timedelta(microseconds=node.index)) for node in plan.nodes]
    ids = {node.index: record.id for node, record in zip(plan.nodes, records, strict=True)}
    output = set(shapes.refs(plan.output))
    for node, record in zip(plan.nodes, records, strict=True):
        before = shapes.refs(node.input)
        shape = shapes.renamed(node.input, ids)
        record.workflow_id, record.pending = workflow_id, len(before)
        record.flow = {
            "step": node.index,
            "input": shape,
            "receive": node.step.receive,
            "next": [],
            "output": node.index in output,
        }
        expires = limits_of(node.step.task.func).expires
        if expires is not None:
            record.flow["expires"] = expires.total_seconds()  # from when it becomes READY
        if before:
            record.status = TaskStatus.WAITING
        elif node.input is not None:
            # After an empty group: its input (an empty list) is known already.
            record.args, record.kwargs = shapes.given(
                node.step.receive, shapes.evaluate(node.input, {}), record.args, record.kwargs
            )
    for node in plan.nodes:
        for earlier in shapes.refs(node.input):
            records[earlier].flow["next"].append(ids[node.index])
    handler = None
    if on_error is not None:
        handler = _record(on_error, now)
        handler.workflow_id, handler.status, handler.pending = workflow_id, TaskStatus.WAITING, 1
        handler.flow = {"step": len(records), "role": ON_ERROR, "receive": on_error.receive}
        records.append(handler)
    workflow = WorkflowRecord(
        id=workflow_id,
        name=name[:200],
        backend_name=backend.alias,
        status=WorkflowStatus.RUNNING,
        pending=len(output),
        steps=len(plan.nodes),
        graph={
            "tree": plan.tree,
            "ids": [ids[node.index] for node in plan.nodes],
            "output": shapes.renamed(plan.output, ids),
            "on_error": handler.id if handler is not None else None,
        },
        created_at=now,
    )
    with transaction.atomic(using=using):
        workflow.save(using=using, force_insert=True)
        TaskRecord.objects.using(using).bulk_create(records, batch_size=500)
    for record, node in zip(records, plan.nodes, strict=False):
        task_enqueued.send(type(backend), task_result=to_result(record, node.step.task))
    for queue in sorted({r.queue_name for r in records if r.status == TaskStatus.READY}):
        transaction.on_commit(lambda queue=queue: wake(queue), using=using)  # type: ignore[misc]
    return read_workflow(workflow, records, using)


def _one_database(steps: list[Step]) -> SocketServiceBackend:
    """Return the first step's backend, once every step's is socketsvc's on one database
    (one transaction); each step keeps its own alias."""
    backends = [step.task.get_backend() for step in steps]
    if not all(isinstance(backend, SocketServiceBackend) for backend in backends):
        raise TypeError("every step of a workflow must use socketsvc's backend")
    databases = {backend.database for backend in backends}  # type: ignore[attr-defined]
    if len(databases) != 1:
        raise TypeError(
            f"the steps of a workflow must keep their tasks in one database, not {databases}"
        )
    first = backends[0]
    assert isinstance(first, SocketServiceBackend)
    return first


def _record(step: Step, now: Any) -> TaskRecord:
    task = step.task
    backend = task.get_backend()
    assert isinstance(backend, SocketServiceBackend)
    backend.validate_task(task)
    if limits_of(task.func).unique_key is not None:
        raise TypeError(
            f"{task.module_path} has a unique key (@limits(unique_key=...)): a workflow's step "
            "cannot be skipped for a duplicate, so it cannot be a step"
        )
    return backend.record_of(task, list(step.args), dict(step.kwargs), now)
