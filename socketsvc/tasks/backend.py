"""``socketsvc.tasks.SocketServiceBackend``: Django's Tasks API, stored in the project's database.

``enqueue`` writes the task as a row in the caller's transaction, so a task
enqueued inside ``atomic()`` exists only if that transaction commits; once it
has committed, the daemon is woken over its socket (no polling) and claims
the task at once. A daemon that is down finds the row when it starts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from socketsvc.models import TaskRecord
from socketsvc.protocol import find_not_json_argument
from socketsvc.tasks import store
from socketsvc.tasks.compat import (
    BaseTaskBackend,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
)
from socketsvc.tasks.policy import policy_of
from socketsvc.tasks.wake import wake


class SocketServiceBackend(BaseTaskBackend):
    """Durable tasks run by ``manage.py runsocketservice``.

    ``OPTIONS``: ``DATABASE`` (the alias holding the task table, default
    ``"default"``).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database = str(self.options.get("DATABASE", DEFAULT_DB_ALIAS))

    def validate_task(self, task: Task[Any, Any]) -> None:
        """Validate as the framework does, taking ``run_after`` as a timedelta from now too."""
        if isinstance(task.run_after, timedelta):
            object.__setattr__(task, "run_after", timezone.now() + task.run_after)
        super().validate_task(task)

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any]:
        """Store the task; wake the daemon once the caller's transaction commits."""
        self.validate_task(task)
        record = store.insert(
            task_path=task.module_path,
            queue_name=task.queue_name,
            backend_name=self.alias,
            priority=task.priority,
            args=_json_arguments(task, list(args), "args"),
            kwargs=_json_arguments(task, dict(kwargs), "kwargs"),
            run_after=task.run_after,
            max_attempts=policy_of(task.func).attempts,
            using=self.database,
        )
        result = to_result(record, task)
        task_enqueued.send(type(self), task_result=result)
        queue = task.queue_name
        transaction.on_commit(lambda: wake(queue), using=self.database)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """Read a task's result from the database (from any process)."""
        try:
            record = TaskRecord.objects.using(self.database).get(
                id=result_id, backend_name=self.alias
            )
        except (TaskRecord.DoesNotExist, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        return to_result(record)


def load_task(task_path: str) -> Task[Any, Any]:
    """Import the Task[Any, Any] a row names; raise ImportError (with the path) if it is not one."""
    try:
        task = import_string(task_path)
    except ImportError as exc:
        raise ImportError(f"task {task_path} cannot be imported: {exc}") from exc
    if not isinstance(task, Task):
        raise TypeError(f"{task_path} is not a Task (was @task removed?)")
    return task


def to_result(record: TaskRecord, task: Task[Any, Any] | None = None) -> TaskResult[Any]:
    """Return the framework's TaskResult for a row."""
    task = task if task is not None else load_task(record.task_path)
    run_after: datetime | None = record.run_after
    result: TaskResult[Any] = TaskResult(
        task=task.using(
            priority=record.priority,
            queue_name=record.queue_name,
            run_after=run_after,
            backend=record.backend_name,
        ),
        id=record.id,
        status=TaskResultStatus(record.status),
        enqueued_at=record.enqueued_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        last_attempted_at=record.last_attempted_at,
        args=record.args,
        kwargs=record.kwargs,
        backend=record.backend_name,
        errors=[
            TaskError(
                exception_class_path=error["exception_class_path"], traceback=error["traceback"]
            )
            for error in record.errors
        ],
        worker_ids=list(record.worker_ids),
    )
    object.__setattr__(result, "_return_value", record.return_value)
    return result


def _json_arguments(task: Task[Any, Any], values: Any, kind: str) -> Any:
    """The framework's own rule: JSON types only (a tuple becomes a list); a value
    that is not JSON is named, with the task, instead of the bare "Unsupported type"."""
    try:
        return normalize_json(values)
    except TypeError as exc:
        found = find_not_json_argument(values, kind)
        if found is None:
            raise
        where, type_name = found
        raise TypeError(
            f"{task.module_path}: the argument {where} is {type_name}, which a task cannot "
            "take: its arguments are stored as JSON (str, int, float, bool, None, lists, "
            "dicts with str keys); pass e.g. a primary key or an ISO date string"
        ) from exc
