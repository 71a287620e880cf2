"""``manage.py taskclient``: a process that enqueues and reads tasks, as a web process would.

It reads one JSON request per line on stdin and answers one JSON line on
stdout, so a test can drive it: ``{"op": "enqueue", "task": "add", "args": [1, 2]}``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from socketsvc.tasks import (
    DuplicateTask,
    cancel,
    cancel_workflow,
    chain,
    chord,
    enqueue_many,
    get_progress,
    get_workflow,
    group,
    step,
)
from socketsvc.tasks.compat import task_backends, task_enqueued
from tests.testapp import tasks

_enqueued: list[str] = []
task_enqueued.connect(
    lambda sender, task_result, **kwargs: _enqueued.append(task_result.id), weak=False
)


def _describe(result: Any) -> dict[str, Any]:
    described = {
        "id": result.id,
        "status": str(result.status),
        "attempts": result.attempts,
        "worker_ids": result.worker_ids,
        "errors": [
            {"exception_class_path": e.exception_class_path, "traceback": e.traceback}
            for e in result.errors
        ],
        "enqueued_at": result.enqueued_at,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "last_attempted_at": result.last_attempted_at,
        "queue_name": result.task.queue_name,
        "priority": result.task.priority,
        "run_after": result.task.run_after,
        "args": result.args,
        "kwargs": result.kwargs,
    }
    if result.status == "SUCCESSFUL":
        described["return_value"] = result.return_value
    return described


def _canvas(spec: dict[str, Any]) -> Any:
    """``{"step": path, "args", "kwargs", "as"}``, ``{"chain": [...]}``, ``{"group": [...]}``,
    ``{"chord": [group, callback]}``."""
    if "step" in spec:
        made = step(import_string(spec["step"]), *spec.get("args", []), **spec.get("kwargs", {}))
        return made.result_as(spec["as"]) if "as" in spec else made
    if "chain" in spec:
        return chain(*map(_canvas, spec["chain"]))
    if "group" in spec:
        return group(*map(_canvas, spec["group"]))
    header, callback = spec["chord"]
    return chord(_canvas(header), _canvas(callback))


def _workflow(result: Any) -> dict[str, Any]:
    return {
        "id": result.id,
        "name": result.name,
        "status": result.status,
        "steps": [
            {"id": s.id, "task": s.task, "status": s.status, "on_error": s.on_error}
            for s in result.steps
        ],
        "reason": result.reason,
        "return_value": result.return_value if result.status == "SUCCESSFUL" else None,
    }


class Command(BaseCommand):
    help = "Enqueue and read tasks for the test suite, one JSON request per stdin line."

    def handle(self, *args: Any, **options: Any) -> None:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                answer = {"ok": getattr(self, f"do_{request['op']}")(**request.get("args", {}))}
            except Exception as exc:
                cls = type(exc)
                answer = {"error": f"{cls.__module__}.{cls.__qualname__}", "message": str(exc)}
            sys.stdout.write(json.dumps(answer, default=str) + "\n")
            sys.stdout.flush()

    def do_enqueue(  # noqa: PLR0917
        self,
        task: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: float | None = None,
        atomic: str | None = None,
    ) -> dict[str, Any]:
        found = import_string(task) if "." in task else getattr(tasks, task)
        chosen = found.using(
            priority=priority,
            queue_name=queue_name,
            run_after=None if run_after is None else timezone.now() + timedelta(seconds=run_after),
        )
        if atomic is None:
            return _describe(chosen.enqueue(*(args or []), **(kwargs or {})))
        with transaction.atomic():
            result = chosen.enqueue(*(args or []), **(kwargs or {}))
            if atomic == "rollback":
                transaction.set_rollback(True)
        return _describe(result)

    def do_traced(self, task: str, args: list[Any], method: str) -> dict[str, Any]:
        """Inside a span of this process (as a traced web request would be): call *method*
        and enqueue *task*; the span's ids and the spans this process finished."""
        from opentelemetry import trace

        from socketsvc import call
        from tests.testapp import otel

        with trace.get_tracer("tests").start_as_current_span("web request") as span:
            answer = call(method, *args)
            result = getattr(tasks, task).enqueue(*args)
        context = span.get_span_context()
        return {
            "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
            "answer": answer,
            "task_id": result.id,
            "spans": otel.finished(),
        }

    def do_enqueue_many(self, task: str, calls: list[list[Any]]) -> list[str]:
        """Enqueue *task* once per ``[args, kwargs]`` of *calls* in one bulk call; its ids."""
        found = import_string(task) if "." in task else getattr(tasks, task)
        return [result.id for result in enqueue_many(found, [(a, k) for a, k in calls])]

    def do_enqueue_times(
        self, task: str, args: list[Any], times: int, pause: float = 0.0
    ) -> dict[str, Any]:
        """Enqueue the same call *times* times; the ids returned, and how many raised
        DuplicateTask."""
        found = import_string(task) if "." in task else getattr(tasks, task)
        ids, duplicates = [], 0
        for _ in range(times):
            try:
                ids.append(found.enqueue(*args).id)
            except DuplicateTask:
                duplicates += 1
            time.sleep(pause)
        return {"ids": ids, "duplicates": duplicates}

    def do_result(self, id: str) -> dict[str, Any]:
        return _describe(task_backends["default"].get_result(id))

    def do_progress(self, id: str) -> Any:
        return get_progress(id)

    def do_cancel(self, id: str) -> dict[str, Any]:
        return _describe(cancel(id))

    def do_workflow(
        self,
        spec: dict[str, Any],
        on_error: dict[str, Any] | None = None,
        name: str | None = None,
        atomic: str | None = None,
    ) -> dict[str, Any]:
        """Enqueue the workflow *spec* describes (see :func:`_canvas`); its state."""
        canvas = _canvas(spec)
        handler = _canvas(on_error) if on_error is not None else None
        if atomic is None:
            return _workflow(canvas.enqueue(name=name, on_error=handler))
        with transaction.atomic():
            result = canvas.enqueue(name=name, on_error=handler)
            if atomic == "rollback":
                transaction.set_rollback(True)
        return {"id": result.id}

    def do_workflow_state(self, id: str) -> dict[str, Any]:
        return _workflow(get_workflow(id))

    def do_cancel_workflow(self, id: str) -> dict[str, Any]:
        return _workflow(cancel_workflow(id))

    def do_admin_cancel_workflow(self, id: str) -> int:
        """Press the workflow page's "Cancel workflow" as a superuser would (the admin's own
        view, through Django's test client); return the response's status."""
        from django.contrib.auth.models import User
        from django.test import Client
        from django.urls import reverse

        user = User.objects.filter(username="canceller").first() or User.objects.create_superuser(
            "canceller", "canceller@example.com", "pw"
        )
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        page = client.get(reverse("admin:socketsvc_workflowrecord_change", args=[id]))
        if b"data-socketsvc-cancel-workflow" not in page.content:
            raise RuntimeError(f"no cancel button on the workflow's page ({page.status_code})")
        return client.post(reverse("admin:socketsvc_workflowrecord_cancel", args=[id])).status_code

    def do_enqueued_signals(self) -> list[str]:
        return list(_enqueued)

    def do_begin(self) -> str:
        """Open a transaction that stays open across requests until ``commit``."""
        self._held = transaction.atomic()
        self._held.__enter__()
        return "begun"

    def do_commit(self) -> str:
        self._held.__exit__(None, None, None)
        return "committed"
