"""Run one claimed task: signals, the request lifecycle, retries, and the result recorded.

The daemon's own bookkeeping goes through the lifecycle like the task does:
a task that idles past ``wait_timeout`` without touching the database still
gets its result written, on a connection checked (and replaced) first. A
result that cannot be written (the database is down) is retried until it is,
or until the daemon must stop; then the row stays RUNNING and the next daemon
to look treats the run as lost (:class:`~socketsvc.tasks.WorkerLost`).
"""

from __future__ import annotations

import json
import time
import traceback as tracebacks
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from django.db import connections
from django.utils import timezone
from structlog.contextvars import bound_contextvars

from .. import backends, dbwait
from ..lifecycle import request_scope
from ..models import TaskRecord, TaskStatus
from . import store
from .backend import load_task, to_result
from .compat import Task, TaskContext, task_finished, task_started
from .policy import NO_RETRY, Cancelled, RetryPolicy, policy_of
from .runtime import Running, set_running

log = structlog.get_logger("socketsvc.tasks")

_WRITE_RETRY_FIRST, _WRITE_RETRY_MAX = 0.2, 5.0
# A task that could not start (its database down) is tried again this much later.
_UNSTARTED_RETRY = 1.0


@dataclass
class Ending:
    """How a run ended: what to write to its row."""

    status: str
    return_value: Any = None
    error: dict[str, str] | None = None
    retry_in: float | None = None
    # Never started: its database was down; back to READY, the attempt not counted.
    unstarted: bool = False

    @property
    def outcome(self) -> str:
        """Return ``ok``, ``retry`` or ``failed`` for the log line."""
        if self.unstarted:
            return "waits_for_database"
        if self.retry_in is not None:
            return "retry"
        return "ok" if self.status == TaskStatus.SUCCESSFUL else "failed"


def _error_of(exc: BaseException) -> dict[str, str]:
    cls = type(exc)
    path = f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(exc, Cancelled):
        path = "socketsvc.tasks.Cancelled"
    text = "".join(tracebacks.format_exception(exc))
    return store.error_entry(path, text)


def _json(value: Any) -> Any:
    """Return *value* as it comes back from JSON (tuples become lists); raise if it cannot."""
    return json.loads(json.dumps(value, allow_nan=False))


class Executor:
    """Runs claimed tasks for one runner (called from its worker threads)."""

    def __init__(  # noqa: PLR0917
        self,
        worker_id: str,
        database: str,
        backend_class: type,
        check_idle_after: Callable[[], float],
        may_keep_trying: Callable[[], bool],
        flush_progress: Callable[[Running], None],
    ) -> None:
        self.worker_id = worker_id
        self.database = database
        self.backend_class = backend_class
        self._check_idle_after = check_idle_after
        self._may_keep_trying = may_keep_trying
        self._flush_progress = flush_progress

    def run(self, record: TaskRecord, running: Running) -> None:
        """Run *record* (already RUNNING for us) to its end and record how it went."""
        started = time.monotonic()
        with bound_contextvars(task_id=record.id, task=record.task_path, attempt=record.attempts):
            try:
                task = load_task(record.task_path)
            except (ImportError, TypeError) as exc:
                ending = Ending(TaskStatus.FAILED, error=_error_of(exc))
                self._record(record, ending, None, started)
                return
            result = to_result(record, task)
            task_started.send(self.backend_class, task_result=result)
            ending = self._call(task, record, result, running)
            self._flush_progress(running)  # the last progress is there before the status
            self._record(record, ending, task, started)

    def _call(
        self, task: Task[Any, Any], record: TaskRecord, result: Any, running: Running
    ) -> Ending:
        policy: RetryPolicy = policy_of(task.func) if record.max_attempts > 1 else NO_RETRY
        set_running(running)
        try:
            with request_scope(self._check_idle_after()):
                if not self._database_reachable():
                    return Ending(TaskStatus.READY, retry_in=_UNSTARTED_RETRY, unstarted=True)
                if task.takes_context:
                    value = task.call(
                        TaskContext(task_result=result), *record.args, **record.kwargs
                    )
                else:
                    value = task.call(*record.args, **record.kwargs)
            return Ending(TaskStatus.SUCCESSFUL, return_value=_json(value))
        except BaseException as exc:
            ending = Ending(TaskStatus.FAILED, error=_error_of(exc))
            attempts = record.attempts
            if policy.retries(attempts, exc) and attempts < record.max_attempts:
                ending.retry_in = policy.delay(attempts)
            return ending
        finally:
            set_running(None)

    def _database_reachable(self) -> bool:
        """Return False if the task's database is down and stays down for the whole wait.

        Only when an outage is already known: the run then waits for the
        database (:mod:`socketsvc.dbwait`) before it starts, and if it is still
        unreachable the task goes back to READY without using an attempt.
        """
        if not dbwait.outage(self.database).down:
            return True
        try:
            connections[self.database].ensure_connection()
        except Exception as exc:
            if backends.is_connection_error(exc):
                return False
            raise
        return True

    def _record(
        self, record: TaskRecord, ending: Ending, task: Task[Any, Any] | None, started: float
    ) -> None:
        retry_at = None
        if ending.retry_in is not None:
            retry_at = timezone.now() + timedelta(seconds=ending.retry_in)
        if ending.unstarted:
            later = retry_at or timezone.now()
            written = self._write(
                lambda: store.put_back(record, self.worker_id, later, self.database)
            )
        else:
            written = self._write(
                lambda: store.finish(
                    record,
                    self.worker_id,
                    status=ending.status,
                    using=self.database,
                    return_value=ending.return_value,
                    error=ending.error,
                    retry_at=retry_at,
                )
            )
        fields: dict[str, Any] = {
            "task_id": record.id,
            "task": record.task_path,
            "queue": record.queue_name,
            "attempt": record.attempts,
            "outcome": ending.outcome,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
        }
        if ending.error is not None:
            fields["error_type"] = ending.error["exception_class_path"]
        if ending.retry_in is not None:
            fields["retry_in"] = round(ending.retry_in, 3)
        if written is None:
            log.warning("task_result_not_recorded", **fields, hint="the run was taken from us")
            return
        (log.warning if ending.error or ending.unstarted else log.info)("task", **fields)
        if written.status != TaskStatus.READY and task is not None:
            task_finished.send(self.backend_class, task_result=to_result(written, task))

    def _write(self, write: Callable[[], TaskRecord | None]) -> TaskRecord | None:
        """Run a bookkeeping write in the lifecycle, retrying while the database is unreachable."""
        delay = _WRITE_RETRY_FIRST
        while True:
            try:
                with request_scope(self._check_idle_after()):
                    return write()
            except Exception as exc:
                if not backends.is_connection_error(exc) or not self._may_keep_trying():
                    raise
                log.warning("task_bookkeeping_waits_for_database", error=str(exc), retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, _WRITE_RETRY_MAX)
