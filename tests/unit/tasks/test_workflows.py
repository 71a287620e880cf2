"""Workflows in one process (``socketsvc_in_process.run_tasks()``, the daemon's claim and
executor on the test database): composition, what each step receives, failure, cancel,
and the errors a wrong workflow gets when it is built."""

from __future__ import annotations

from datetime import timedelta

import django
import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from socketsvc.models import TaskRecord, WorkflowRecord
from socketsvc.tasks import (
    WorkflowDoesNotExist,
    cancel,
    cancel_workflow,
    chain,
    chord,
    get_workflow,
    group,
    limits,
    step,
)
from socketsvc.tasks.compat import task
from socketsvc.tasks.workflows.canvas import compile_canvas
from tests.testapp import flows

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(flow_id: str) -> list[str]:
    return [s.status for s in get_workflow(flow_id).steps]


def test_a_chain_passes_each_result_as_the_next_steps_first_argument(socketsvc_in_process):
    flow = chain(step(flows.add, 1, 2), step(flows.add, 10), step(flows.add, 100)).enqueue()
    assert statuses(flow.id) == ["READY", "WAITING", "WAITING"]
    socketsvc_in_process.run_tasks()
    done = get_workflow(flow.id)
    assert done.status == "SUCCESSFUL" and done.return_value == 113
    assert [r.args for r in TaskRecord.objects.order_by("enqueued_at")] == [
        [1, 2],
        [3, 10],
        [13, 100],
    ]


def test_with_args_and_result_as_pass_the_input_as_a_named_argument_or_not_at_all(
    socketsvc_in_process,
):
    """``task.with_args()`` is a step; ``result_as("value")`` passes the input by name,
    ``result_as(None)`` not at all (the step still waits for it)."""
    flow = chain(
        flows.add.with_args(2, 3),  # type: ignore[attr-defined]
        step(flows.add, amount=1).result_as("value"),
        step(flows.add, 40, 2).result_as(None),
    ).enqueue()
    socketsvc_in_process.run_tasks()
    assert get_workflow(flow.id).return_value == 42
    second = TaskRecord.objects.get(id=flow.steps[1].id)
    assert second.kwargs == {"amount": 1, "value": 5} and second.return_value == 6


def test_nesting_gives_each_step_the_shape_it_follows_in_the_order_written(
    socketsvc_in_process,
):
    """A chain of a group of chains, a chord, then a group: results nest as written."""
    flow = chain(
        group(chain(step(flows.add, 1, 1), step(flows.add, 1)), step(flows.add, 5, 5)),
        step(flows.then, "n", "after"),
        group(step(flows.then, "n", "x"), step(flows.then, "n", "y")),
    ).enqueue()
    socketsvc_in_process.run_tasks()
    done = get_workflow(flow.id)
    assert done.status == "SUCCESSFUL"
    assert done.return_value == [[3, 10], [3, 10]]
    assert compile_canvas(group(flows.add, chain(flows.add, flows.add))).output == {
        "all": [{"one": 0}, {"one": 2}]
    }


def test_a_chords_callback_gets_the_members_results_in_member_order(socketsvc_in_process):
    flow = chord((step(flows.add, n, 0) for n in range(20)), step(flows.once, "c")).enqueue()
    socketsvc_in_process.run_tasks()
    assert get_workflow(flow.id).return_value == {"count": 20, "results": list(range(20))}


def test_an_empty_group_gives_the_next_step_an_empty_list_at_once(socketsvc_in_process):
    flow = chain(group(), step(flows.once, "empty")).enqueue()
    assert statuses(flow.id) == ["READY"]
    socketsvc_in_process.run_tasks()
    assert get_workflow(flow.id).return_value == {"count": 0, "results": []}


def test_a_failed_step_fails_the_workflow_cancels_the_rest_and_runs_on_error_once(
    socketsvc_in_process,
):
    flow = chain(
        group(step(flows.add, 1, 1), step(flows.fail, "f", "b")),
        step(flows.once, "f"),
        step(flows.then, "f", "last"),
    ).enqueue(on_error=step(flows.on_error, "f"))
    socketsvc_in_process.run_tasks()
    done = get_workflow(flow.id)
    assert done.status == "FAILED"
    assert done.reason == {
        "step": flow.steps[1].id,
        "task": "tests.testapp.flows.fail",
        "error": "builtins.RuntimeError",
    }
    assert statuses(flow.id) == ["SUCCESSFUL", "FAILED", "FAILED", "FAILED", "SUCCESSFUL"]
    handler = TaskRecord.objects.get(id=flow.steps[-1].id)
    assert handler.return_value["step"] == flow.steps[1].id
    with pytest.raises(ValueError, match="FAILED"):
        _ = done.return_value


def test_on_error_is_dropped_once_the_workflow_succeeded(socketsvc_in_process):
    flow = chain(step(flows.add, 1, 1)).enqueue(on_error=step(flows.on_error, "ok"))
    assert len(get_workflow(flow.id).steps) == 2
    socketsvc_in_process.run_tasks()
    done = get_workflow(flow.id)
    assert done.status == "SUCCESSFUL" and [s.on_error for s in done.steps] == [False]


def test_cancelling_a_workflow_fails_every_step_not_started(socketsvc_in_process):
    flow = chain(step(flows.add, 1, 1), step(flows.add, 1)).enqueue(
        on_error=step(flows.on_error, "c")
    )
    cancelled = cancel_workflow(flow.id)
    assert cancelled.status == "CANCELLED"
    assert socketsvc_in_process.run_tasks() == []
    assert statuses(flow.id) == ["FAILED", "FAILED", "FAILED"]
    assert cancel_workflow(flow.id).status == "CANCELLED"  # again: left as it is


def test_cancelling_one_waiting_step_fails_its_workflow_and_what_has_not_started(
    socketsvc_in_process,
):
    flow = chain(step(flows.add, 1, 1), step(flows.add, 1)).enqueue()
    cancel(flow.steps[1].id)
    done = get_workflow(flow.id)
    assert done.status == "FAILED" and done.reason["error"] == "socketsvc.tasks.Cancelled"
    assert socketsvc_in_process.run_tasks() == []
    assert statuses(flow.id) == ["FAILED", "FAILED"]


def test_a_workflow_enqueued_in_a_rolled_back_transaction_leaves_no_row():
    with transaction.atomic():
        flow = chain(flows.add.with_args(1, 2), step(flows.add, 3)).enqueue()  # type: ignore[attr-defined]
        transaction.set_rollback(True)
    assert not WorkflowRecord.objects.filter(id=flow.id).exists()
    assert not TaskRecord.objects.exists()
    with pytest.raises(WorkflowDoesNotExist):
        get_workflow(flow.id)


@task
@limits(unique_key=lambda: "one")
def _unique() -> None:
    """A task with a unique key."""


def test_what_cannot_be_a_workflow_is_refused_when_it_is_built():
    with pytest.raises(ValueError, match="at least one step"):
        chain().enqueue()
    with pytest.raises(TypeError, match="made with @task"):
        step(len)
    with pytest.raises(TypeError, match="not int"):
        chain(flows.add, 3)
    with pytest.raises(TypeError, match="unique key"):
        chain(_unique).enqueue()
    with pytest.raises(ValueError, match="keyword argument"):
        step(flows.add).result_as("not a name")


def test_an_empty_group_after_a_step_waits_for_it_and_gives_an_empty_list(
    socketsvc_in_process,
):
    """chain(a, group(), b): b starts only after a, receiving []; a chain ending in an empty
    group succeeds with [] once what came before it did."""
    middle = chain(step(flows.add, 1, 1), group(), step(flows.once, "m")).enqueue()
    assert statuses(middle.id) == ["READY", "WAITING"]
    ending = chain(step(flows.add, 2, 2), group()).enqueue()
    socketsvc_in_process.run_tasks()
    assert get_workflow(middle.id).return_value == {"count": 0, "results": []}
    done = get_workflow(ending.id)
    assert done.status == "SUCCESSFUL" and done.return_value == []


def test_a_step_keeps_its_own_run_after_when_what_it_follows_is_done_early(
    socketsvc_in_process,
):
    later = timezone.now() + timedelta(hours=1)
    flow = chain(step(flows.add, 1, 1), step(flows.add.using(run_after=later), 1)).enqueue()
    socketsvc_in_process.run_tasks()
    second = TaskRecord.objects.get(id=flow.steps[1].id)
    assert second.status == "READY" and second.available_at == later
    assert get_workflow(flow.id).status == "RUNNING"


DUMMY = (
    "django.tasks.backends.dummy.DummyBackend"
    if django.VERSION >= (6,)
    else "django_tasks.backends.dummy.DummyBackend"
)


def test_a_step_on_another_backend_is_refused():
    """Every row is written in one transaction of socketsvc's database: a step of another
    backend cannot be part of it."""
    tasks = {
        "default": {"BACKEND": "socketsvc.tasks.SocketServiceBackend"},
        "other": {"BACKEND": DUMMY},
    }
    with override_settings(TASKS=tasks):
        elsewhere = task(backend="other")(flows.add.func)
        with pytest.raises(TypeError, match="socketsvc's backend"):
            chain(step(flows.add, 1, 1), step(elsewhere, 1)).enqueue()
    assert not WorkflowRecord.objects.exists()
