"""Run one claimed task: signals, the request lifecycle, retries, and the result recorded.

The daemon's own bookkeeping goes through the lifecycle like the task does:
a task that idles past ``wait_timeout`` without touching the database still
gets its result written, on a connection checked (and replaced) first. A
result that cannot be written because the database is down is retried until
it is, or until the daemon must stop; then the row stays RUNNING and the next
daemon to look treats the run as lost (:class:`~socketsvc.tasks.WorkerLost`).
A write that lost a race with another transaction (a deadlock, a lock wait
timeout) is tried again. A result the database refuses (a value it cannot
store, a statement larger than it accepts) ends the task FAILED with
:class:`~socketsvc.tasks.ResultNotStored` saying why; if not even that can
be written, the runner takes the run back as lost: a task never stays
RUNNING under a live daemon.

A failed run is recorded, and ``task_finished`` sent, while its exception is
being handled, as the framework's own worker does: the framework's receiver
then logs it with its traceback, for ``mail_admins``, Sentry and the like.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import traceback as tracebacks
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from asgiref.sync import async_to_sync
from django.db import connections
from django.utils import timezone
from structlog.contextvars import bound_contextvars

from socketsvc.db import outages, vendors
from socketsvc.db.lifecycle import request_scope
from socketsvc.models import TaskRecord, TaskStatus
from socketsvc.observe import events, tracing
from socketsvc.tasks import entries, store
from socketsvc.tasks.backend import load_task, to_result
from socketsvc.tasks.compat import Task, TaskContext, task_finished, task_started
from socketsvc.tasks.policy import (
    NO_RETRY,
    Cancelled,
    RetryPolicy,
    TimeLimitExceeded,
    policy_of,
)
from socketsvc.tasks.runtime import Running, set_running

log = structlog.get_logger(__name__)

_WRITE_RETRY_FIRST, _WRITE_RETRY_MAX = 0.2, 5.0
# A task that could not start (its database down) is tried again this much later.
_UNSTARTED_RETRY = 1.0
# A write that loses its connection this many times in a row, over this many seconds,
# while the database accepts new connections is refused, not interrupted (as MySQL
# closes the connection on a statement over max_allowed_packet, which is checked
# before sending; this catches what that check cannot know). Sessions killed under
# it one after another by an operator or a failing proxy must not look like this.
_REFUSED_AFTER, _REFUSED_WITHIN = 8, 20.0
# Room left in a statement beside the return value (the other columns, the SQL).
_STATEMENT_OVERHEAD = 64 * 1024


@dataclass
class Ending:
    """How a run ended: what to write to its row."""

    status: str
    return_value: Any = None
    error: dict[str, str] | None = None
    retry_in: float | None = None
    # Never started: its database was down; back to READY, the attempt not counted.
    unstarted: bool = False


def _error_of(exc: BaseException) -> dict[str, str]:
    cls = type(exc)
    path = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__ == "socketsvc.tasks.policy":
        path = f"socketsvc.tasks.{cls.__qualname__}"  # as the package names it
    text = "".join(tracebacks.format_exception(exc))
    return entries.error_entry(path, text)


def _json(value: Any) -> Any:
    """Return *value* as it comes back from JSON (tuples become lists); raise if it cannot."""
    return json.loads(json.dumps(value, allow_nan=False))


def _not_stored(reason: str) -> dict[str, str]:
    return entries.error_entry(
        "socketsvc.tasks.ResultNotStored",
        f"socketsvc.tasks.ResultNotStored: the task's result could not be stored: {reason}\n",
    )


def _invoke(task: Task[Any, Any], record: TaskRecord, result: Any, running: Running) -> Any:
    """Call the task's function (an ``async def`` one on an event loop of its own), marked as
    the task's own code: a time limit or a cancel is raised only inside it."""
    args: list[Any] = list(record.args)
    if task.takes_context:
        args.insert(0, TaskContext(task_result=result))
    if not inspect.iscoroutinefunction(task.func):
        running.enter()
        try:
            return task.func(*args, **record.kwargs)
        finally:
            running.leave()

    async def call() -> Any:
        loop, current = asyncio.get_running_loop(), asyncio.current_task()
        assert current is not None

        def cancel() -> None:
            loop.call_soon_threadsafe(current.cancel)

        running.cancel_coroutine = cancel
        running.enter()
        try:
            return await task.func(*args, **record.kwargs)
        except asyncio.CancelledError:
            if running.stopping:
                raise _stopped_by(running) from None
            raise
        finally:
            running.leave()

    # The ORM's async calls run in this thread (thread_sensitive): its connections, checked
    # and closed by the lifecycle around the run as for any task.
    return async_to_sync(call)()


def _stopped_by(running: Running) -> BaseException:
    if running.stopping == "cancel":
        return Cancelled(f"task {running.record_id} was cancelled")
    return TimeLimitExceeded(_over_limit(running))


def _over_limit(running: Running) -> str:
    limits = (running.record.limits or {}) if running.record is not None else {}
    timeout = limits.get("timeout")
    return (
        f"the run went past its time limit of {timeout:g} s"
        if timeout is not None
        else "the run went past its time limit"
    )


def _explained(exc: BaseException, running: Running) -> BaseException:
    """Give an exception raised from outside the thread (it has no arguments) its reason."""
    if type(exc) in (TimeLimitExceeded, Cancelled) and not exc.args:
        explained = _stopped_by(running) if running.stopping else type(exc)(_over_limit(running))
        explained.__traceback__ = exc.__traceback__
        return explained
    return exc


class RefusedWrite(Exception):
    """The database refused a write about a run (not an outage); the message says why."""


class NotRecorded(Exception):
    """Not even the failure of a run could be written: its row is still RUNNING, ours."""


class Executor:
    """Runs claimed tasks for one runner (called from its worker threads)."""

    def __init__(
        self,
        database: str,
        backend_class: type,
        check_idle_after: Callable[[], float],
        may_keep_trying: Callable[[], bool],
        flush_progress: Callable[[Running], None],
    ) -> None:
        self.database = database
        self.backend_class = backend_class
        self._check_idle_after = check_idle_after
        self._may_keep_trying = may_keep_trying
        self._flush_progress = flush_progress

    def run(self, record: TaskRecord, running: Running) -> bool:
        """Run *record* (already RUNNING for us) to its end and record how it went.

        Returns False if how it ended could not be recorded (the row is still
        RUNNING under our claim: the caller takes the run back as lost).
        """
        started = time.monotonic()
        with (
            bound_contextvars(task_id=record.id, task=record.task_path, attempt=record.attempts),
            tracing.task_span(
                record.task_path, record.queue_name, record.attempts, record.id, record.trace
            ),
        ):
            try:
                task = load_task(record.task_path)
            except (ImportError, TypeError) as exc:
                ending = Ending(TaskStatus.FAILED, error=_error_of(exc))
                _count_start(record)
                return self._record(record, ending, None, started)
            result = to_result(record, task)
            task_started.send(self.backend_class, task_result=result)
            return self._call(task, record, result, running, started)

    def _call(
        self,
        task: Task[Any, Any],
        record: TaskRecord,
        result: Any,
        running: Running,
        started: float,
    ) -> bool:
        policy: RetryPolicy = policy_of(task.func) if record.max_attempts > 1 else NO_RETRY
        set_running(running)
        try:
            with request_scope(self._check_idle_after()):
                if not self._database_reachable():
                    ending = Ending(TaskStatus.READY, retry_in=_UNSTARTED_RETRY, unstarted=True)
                else:
                    _count_start(record)
                    value = _invoke(task, record, result, running)
                    ending = Ending(TaskStatus.SUCCESSFUL, return_value=_json(value))
        except BaseException as exc:
            running.leave()
            set_running(None)
            ending = Ending(TaskStatus.FAILED, error=_error_of(_explained(exc, running)))
            attempts = record.attempts
            if policy.retries(attempts, exc) and attempts < record.max_attempts:
                ending.retry_in = policy.delay(attempts)
            self._flush_progress(running)  # the last progress is there before the status
            # Still handling *exc*: task_finished's receivers see it (sys.exc_info()).
            return self._record(record, ending, task, started)
        set_running(None)
        self._flush_progress(running)
        return self._record(record, ending, task, started)

    def _database_reachable(self) -> bool:
        """Return False if the task's database is down and stays down for the whole wait.

        Only when an outage is already known: the run then waits for the
        database (:mod:`socketsvc.db.outages`) before it starts, and if it is still
        unreachable the task goes back to READY without using an attempt.
        """
        if not outages.outage(self.database).down:
            return True
        try:
            connections[self.database].ensure_connection()
        except Exception as exc:
            if vendors.is_connection_error(exc):
                return False
            raise
        return True

    def _record(
        self, record: TaskRecord, ending: Ending, task: Task[Any, Any] | None, started: float
    ) -> bool:
        """Write how the run ended and say so; return False if it could not be written."""
        try:
            written, ending = self._store(record, ending)
        except NotRecorded:
            return False
        fields: dict[str, Any] = {
            "task_id": record.id,
            "task": record.task_path,
            "queue": record.queue_name,
            "attempt": record.attempts,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
        }
        if ending.error is not None:
            fields["error_type"] = ending.error["exception_class_path"]
        if written is None:
            log.warning("task_result_not_recorded", **fields, hint="the run was taken from us")
            return True
        if ending.unstarted and written.status == TaskStatus.READY:
            outcome = "waits_for_database"
        elif written.status == TaskStatus.READY:
            outcome = "retry"
            fields["retry_in"] = round(ending.retry_in or 0.0, 3)
        else:
            outcome = "ok" if written.status == TaskStatus.SUCCESSFUL else "failed"
        if not (ending.unstarted and written.status == TaskStatus.READY):
            _count_end(record, written, fields.get("error_type"), time.monotonic() - started)
        (log.info if outcome == "ok" else log.warning)("task", **fields, outcome=outcome)
        if written.status != TaskStatus.READY and task is not None:
            task_finished.send(self.backend_class, task_result=to_result(written, task))
        return True

    def _store(self, record: TaskRecord, ending: Ending) -> tuple[TaskRecord | None, Ending]:
        """Write how the run ended; a result the database refuses ends it FAILED, saying why."""
        try:
            return self._write(lambda: self._write_ending(record, ending)), ending
        except RefusedWrite as exc:
            refused = Ending(TaskStatus.FAILED, error=_not_stored(str(exc)))
        log.error(
            "task_result_refused",
            task_id=record.id,
            reason=refused.error["traceback"].strip() if refused.error else "",
            hint="the task ends FAILED with socketsvc.tasks.ResultNotStored",
        )
        try:
            # Small and plain: only an outage (waited out) or a bug can stop this one.
            written = self._write(lambda: self._write_ending(record, refused), lost_means=None)
        except RefusedWrite as exc:
            log.error("task_failure_not_recorded", task_id=record.id, error=str(exc))
            raise NotRecorded from exc
        return written, refused

    def _check_size(self, ending: Ending) -> None:
        """Refuse, before sending it, a return value larger than the database takes at once."""
        if ending.return_value is None:
            return
        conn = connections[self.database]
        limit = vendors.ops_for(conn.vendor).max_statement_bytes(conn)
        if limit is None:
            return
        size = len(json.dumps(ending.return_value).encode())
        if size + _STATEMENT_OVERHEAD > limit:
            raise RefusedWrite(
                f"the return value is {size} bytes of JSON, more than the database accepts "
                f"in one statement ({limit} bytes; MySQL's max_allowed_packet)"
            )

    def _write_ending(self, record: TaskRecord, ending: Ending) -> TaskRecord | None:
        self._check_size(ending)
        retry_at = None
        if ending.retry_in is not None:
            retry_at = timezone.now() + timedelta(seconds=ending.retry_in)
        if ending.unstarted:
            return store.put_back(
                record, record.claimed_by, retry_at or timezone.now(), self.database
            )
        return store.finish(
            record,
            record.claimed_by,
            status=ending.status,
            using=self.database,
            return_value=ending.return_value,
            error=ending.error,
            retry_at=retry_at,
        )

    def _write(
        self,
        write: Callable[[], TaskRecord | None],
        lost_means: tuple[int, float] | None = (_REFUSED_AFTER, _REFUSED_WITHIN),
    ) -> TaskRecord | None:
        """Run a bookkeeping write in the lifecycle, retrying while the database is unreachable
        or the write lost a race with another transaction (a deadlock, a lock wait timeout).

        Raises RefusedWrite when the database refuses it: an error that is not
        about reaching the server, or (*lost_means*: that many times in a row,
        over at least that many seconds) the connection lost at that statement
        while new connections to the server succeed.
        """
        delay = _WRITE_RETRY_FIRST
        lost_while_up = 0
        first_lost = 0.0
        while True:
            try:
                with request_scope(self._check_idle_after()):
                    return write()
            except Exception as exc:
                if vendors.is_conflict(exc):
                    # Rolled back, nothing written: the same write again will do.
                    waiting, error = "task_bookkeeping_conflict", _describe(exc)
                else:
                    if not vendors.is_connection_error(exc):
                        if vendors.is_database_error(exc):
                            raise RefusedWrite(_describe(exc)) from exc
                        raise
                    if vendors.is_connect_failure(exc):
                        lost_while_up = 0  # an outage: waited out
                    elif lost_means is not None:
                        lost_while_up += 1
                        first_lost = first_lost if lost_while_up > 1 else time.monotonic()
                        times, within = lost_means
                        if lost_while_up >= times and time.monotonic() - first_lost >= within:
                            raise RefusedWrite(
                                f"the database closed the connection each time it was sent "
                                f"({_describe(exc)}), though it accepts new connections"
                            ) from exc
                    waiting, error = "task_bookkeeping_waits_for_database", str(exc)
                if not self._may_keep_trying():
                    raise
                log.warning(waiting, error=error, retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, _WRITE_RETRY_MAX)


def _count_start(record: TaskRecord) -> None:
    """A run starts: counted, with how long it waited since it could have started."""
    waited = 0.0
    if record.last_attempted_at is not None and record.available_at is not None:
        waited = max(0.0, (record.last_attempted_at - record.available_at).total_seconds())
    events.task_started(record.task_path, record.queue_name, waited)


def _count_end(record: TaskRecord, written: TaskRecord, error: str | None, seconds: float) -> None:
    """A run ended as *written* says: counted, and said on its span."""
    if written.status == TaskStatus.READY:
        outcome = "retry"
    elif written.status == TaskStatus.SUCCESSFUL:
        outcome = "successful"
    else:
        outcome = store.ending_of(error or "")
    events.task_ended(record.task_path, record.queue_name, outcome, seconds)
    tracing.current_ended(outcome, error)


def _describe(exc: BaseException) -> str:
    """Return the driver's code and first line of *exc* (no SQL: drivers put it later)."""
    code = vendors.describe_code(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return f"{code}: {first}" if code else first
