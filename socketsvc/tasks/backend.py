"""``socketsvc.tasks.SocketServiceBackend``: Django's Tasks API, stored in the project's database.

``enqueue`` writes the task as a row in the caller's transaction, so a task
enqueued inside ``atomic()`` exists only if that transaction commits; once it
has committed, the daemon is woken over its socket (no polling) and claims
the task at once. A daemon that is down finds the row when it starts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from socketsvc.db import vendors
from socketsvc.models import TaskRecord, TaskStatus
from socketsvc.observe import events
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
from socketsvc.tasks.limits import controls_for, limits_of, queue_limits
from socketsvc.tasks.policy import DuplicateTask, policy_of
from socketsvc.tasks.wake import wake

# Inserting a unique task again after the task holding its key finished in between, or
# after a deadlock with the daemon changing that task.
_UNIQUE_TRIES = 8


class SocketServiceBackend(BaseTaskBackend):
    """Durable tasks run by ``manage.py runsocketservice``.

    ``OPTIONS``: ``DATABASE`` (the alias holding the task table, default
    ``"default"``); ``QUEUE_LIMITS`` (``{"payments": {"concurrency": 3,
    "rate": "5/s"}}``: limits per queue, held across every daemon).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database = str(self.options.get("DATABASE", DEFAULT_DB_ALIAS))
        self.queue_limits = queue_limits(self.options, alias)

    def validate_task(self, task: Task[Any, Any]) -> None:
        """Validate as the framework does, taking ``run_after`` as a timedelta from now too."""
        if isinstance(task.run_after, timedelta):
            object.__setattr__(task, "run_after", timezone.now() + task.run_after)
        super().validate_task(task)

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any]:
        """Store the task; wake the daemon once the caller's transaction commits.

        A task with a unique key that is READY or RUNNING already gives that
        task's result instead (or raises DuplicateTask, as the task declares).
        """
        self.validate_task(task)
        record = self.record_of(task, args, kwargs, timezone.now())
        if record.unique_key is None:
            store.insert(record, self.database)
        else:
            existing = self._insert_unique(task, record)
            if existing is not None:
                return to_result(existing, task)
        result = to_result(record, task)
        task_enqueued.send(type(self), task_result=result)
        events.task_enqueued(task.module_path, task.queue_name)
        queue = task.queue_name
        transaction.on_commit(lambda: wake(queue), using=self.database)
        return result

    def enqueue_many(
        self, task: Task[Any, Any], calls: Iterable[tuple[Any, Any]]
    ) -> list[TaskResult[Any]]:
        """Store one task per ``(args, kwargs)`` of *calls*: one INSERT per 1,000, one wake-up.

        All of them or none (one transaction, inside the caller's if any). A task
        with a unique key goes through :meth:`enqueue` one call at a time.
        """
        self.validate_task(task)
        if limits_of(task.func).unique_key is not None:
            with transaction.atomic(using=self.database):
                return [self.enqueue(task, args, kwargs) for args, kwargs in calls]
        declared, now = limits_of(task.func), timezone.now()
        rows: list[dict[str, Any]] = []
        for n, (args, kwargs) in enumerate(calls):
            # Each a microsecond after the one before: enqueued in the order given (the order
            # tasks of one priority start in, and the order tasks of one lock key run in).
            at = now + timedelta(microseconds=n)
            row = {
                "id": store.new_id(),
                "args": _json_arguments(task, list(args), "args"),
                "kwargs": _json_arguments(task, dict(kwargs), "kwargs"),
                "enqueued_at": at,
                "available_at": task.run_after if task.run_after is not None else at,
            }
            controls = controls_for(declared, row["args"], row["kwargs"], at)
            row["lock_key"], row["expires_at"] = controls.lock_key, controls.expires_at
            rows.append(row)
        if not rows:
            return []
        # What every row has in common, from the first call.
        common = self.record_of(task, rows[0]["args"], rows[0]["kwargs"], now)
        with transaction.atomic(using=self.database):
            store.insert_many(common, rows, self.database)
        shared = _result_task(task, self.alias, task.run_after)
        results = [_ready_result(shared, self.alias, row) for row in rows]
        for result in results:
            task_enqueued.send(type(self), task_result=result)
        events.task_enqueued(task.module_path, task.queue_name, len(results))
        queue = task.queue_name
        transaction.on_commit(lambda: wake(queue), using=self.database)
        return results

    def record_of(self, task: Task[Any, Any], args: Any, kwargs: Any, now: Any) -> TaskRecord:
        """Return the new row of a call of *task* (not saved): its arguments checked as JSON."""
        args = _json_arguments(task, list(args), "args")
        kwargs = _json_arguments(task, dict(kwargs), "kwargs")
        return store.new_record(
            task_path=task.module_path,
            queue_name=task.queue_name,
            backend_name=self.alias,
            priority=task.priority,
            args=args,
            kwargs=kwargs,
            run_after=task.run_after,
            max_attempts=policy_of(task.func).attempts,
            now=now,
            controls=controls_for(limits_of(task.func), args, kwargs, now),
        )

    def _insert_unique(self, task: Task[Any, Any], record: TaskRecord) -> TaskRecord | None:
        """Insert a task with a unique key; return the READY or RUNNING one holding the key
        instead, if there is one (a unique index decides, so two hosts at once make one)."""
        key = str(record.unique_key)
        alone = not transaction.get_connection(self.database).in_atomic_block
        for attempt in range(_UNIQUE_TRIES):
            last = attempt == _UNIQUE_TRIES - 1
            try:
                with transaction.atomic(using=self.database):
                    store.insert(record, self.database)
            except IntegrityError:
                pass
            except DatabaseError as exc:
                # A deadlock with a daemon changing the task that holds the key: in
                # autocommit nothing else was rolled back, so try again.
                if not (alone and vendors.is_conflict(exc)) or last:
                    raise
                _back_off(attempt)
                continue
            else:
                return None
            try:
                # In autocommit a plain read sees the latest committed row; a locking one
                # would wait for (and could deadlock with) the daemon finishing that very
                # task. Inside the caller's transaction the last try locks, to see past a
                # REPEATABLE READ snapshot taken before that task was enqueued.
                existing = store.active_with_key(
                    record.task_path, key, self.database, locking=last and not alone
                )
            except DatabaseError as exc:
                if not (alone and vendors.is_conflict(exc)) or last:
                    raise
                _back_off(attempt)
                continue
            if existing is None:
                continue  # it finished in between: the key is free again
            if limits_of(task.func).on_duplicate == "raise":
                raise DuplicateTask(
                    f"{task.module_path}: a task with unique key {key!r} is "
                    f"{existing.status} ({existing.id})",
                    existing.id,
                )
            return existing
        raise IntegrityError(f"{task.module_path}: could not enqueue with unique key {key!r}")

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """Read a task's result from the database (from any process)."""
        try:
            record = TaskRecord.objects.using(self.database).get(
                id=result_id, backend_name=self.alias
            )
        except (TaskRecord.DoesNotExist, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        return to_result(record)


def enqueue_many(task: Task[Any, Any], calls: Iterable[tuple[Any, Any]]) -> list[TaskResult[Any]]:
    """Enqueue *task* once per ``(args, kwargs)`` of *calls*; return their results in order.

    On socketsvc's backend: one INSERT per 1,000 tasks, in one transaction
    (inside the caller's, if any), and one wake-up of the daemon. On another
    backend: one ``enqueue()`` per call.
    """
    backend = task.get_backend()
    calls = [(list(args), dict(kwargs)) for args, kwargs in calls]
    if isinstance(backend, SocketServiceBackend):
        return backend.enqueue_many(task, calls)
    return [task.enqueue(*args, **kwargs) for args, kwargs in calls]


def load_task(task_path: str) -> Task[Any, Any]:
    """Import the Task[Any, Any] a row names; raise ImportError (with the path) if it is not one."""
    try:
        task = import_string(task_path)
    except ImportError as exc:
        raise ImportError(f"task {task_path} cannot be imported: {exc}") from exc
    if not isinstance(task, Task):
        raise TypeError(f"{task_path} is not a Task (was @task removed?)")
    return task


def _result_task(task: Task[Any, Any], backend: str, run_after: datetime | None) -> Any:
    return task.using(
        priority=task.priority, queue_name=task.queue_name, run_after=run_after, backend=backend
    )


def _ready_result(task: Task[Any, Any], backend: str, row: dict[str, Any]) -> TaskResult[Any]:
    """Return the TaskResult of a task just enqueued by enqueue_many (its *row*'s values)."""
    result: TaskResult[Any] = TaskResult(
        task=task,
        id=row["id"],
        status=TaskResultStatus.READY,
        enqueued_at=row["enqueued_at"],
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=row["args"],
        kwargs=row["kwargs"],
        backend=backend,
        errors=[],
        worker_ids=[],
    )
    object.__setattr__(result, "_return_value", None)
    return result


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
        # A workflow's WAITING step has not started: READY, as the framework knows it.
        status=TaskResultStatus(
            TaskStatus.READY if record.status == TaskStatus.WAITING else record.status
        ),
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


def _back_off(attempt: int) -> None:
    """Wait a little, more after each conflict, so that the producers colliding on one key
    do not collide again in step."""
    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 (not a secret)


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
