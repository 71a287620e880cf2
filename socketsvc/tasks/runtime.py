"""What a running task, and anyone watching it, can do: progress, get_progress, cancel.

Inside a task run by the daemon, :func:`progress` records how far it got. The
call costs no database write: the runner's housekeeping thread writes the
latest value at most twice a second, on a connection of its own (outside the
task's transactions, so a watcher sees it at once). :func:`cancel` marks the
task; a READY task then fails at once, a RUNNING one raises
:class:`~socketsvc.tasks.Cancelled` at once (at its next bytecode; a task in C
code or a system call is stopped by the hard limit, see ``@limits``), or at
its next :func:`progress` call.
Outside a socketsvc task (RQ, a test calling the function) :func:`progress` does
nothing, so the same task code runs anywhere.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from socketsvc.db import vendors
from socketsvc.models import TaskRecord
from socketsvc.tasks import entries, store
from socketsvc.tasks.compat import TaskResult, TaskResultDoesNotExist, task_backends
from socketsvc.tasks.policy import Cancelled, TimeLimitExceeded
from socketsvc.tasks.wake import cancel_hint

# A cancel that lost a lock race (a deadlock) is tried again this many times in all.
_CONFLICT_TRIES = 3

_local = threading.local()


@dataclass
class Running:
    """A task this process is running: its cancellation flag, its latest progress, its time
    limits, and how to stop it (an exception raised in its thread, or its coroutine cancelled).
    """

    record_id: str
    # The claim it runs under (claimed_by, claims): its progress is written only under it.
    fence: tuple[str, int]
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Its row as claimed, and its limits by this process's monotonic clock.
    record: Any = None
    soft_at: float | None = None
    hard_at: float | None = None
    # Why it was told to stop ("time limit", "cancel"), once it was; when it was.
    stopping: str = ""
    stopping_at: float = 0.0
    # While the task's own code runs: the thread running it, or how to cancel its coroutine.
    thread_id: int | None = None
    cancel_coroutine: Callable[[], None] | None = None
    in_task: bool = False
    guard: threading.Lock = field(default_factory=threading.Lock)
    pending: tuple[int, int | None, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Held while a value taken is written: two writers (the run's own last flush and the
    # housekeeping thread) never write out of order.
    writing: threading.Lock = field(default_factory=threading.Lock)

    def report(self, done: int, total: int | None, note: str) -> None:
        """Keep the latest progress for the writer."""
        with self.lock:
            self.pending = (done, total, note)

    def take(self) -> tuple[int, int | None, str] | None:
        """Return the progress not written yet (and forget it)."""
        with self.lock:
            pending, self.pending = self.pending, None
            return pending

    def enter(self) -> None:
        """The task's own code starts running in this thread."""
        with self.guard:
            self.thread_id = threading.get_ident()
            self.in_task = True

    def leave(self) -> None:
        """The task's own code returned (or raised): nothing may be raised in it any more."""
        with self.guard:
            if self.in_task and self.stopping and self.cancel_coroutine is None:
                _raise_in(self.thread_id, None)  # forget an exception not raised yet
            self.in_task = False

    def stop(self, why: str, exc: type[BaseException]) -> bool:
        """Raise *exc* in the task's code (or cancel its coroutine), once; False if it is not
        running its own code (it ended, or was told already)."""
        with self.guard:
            if not self.in_task or self.stopping:
                return False
            self.stopping, self.stopping_at = why, time.monotonic()
            if self.cancel_coroutine is not None:
                self.cancel_coroutine()
            else:
                _raise_in(self.thread_id, exc)
            return True


def _raise_in(thread_id: int | None, exc: type[BaseException] | None) -> None:
    """Raise *exc* in the thread *thread_id* at its next bytecode (None: take it back)."""
    if thread_id is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
        )


def running_here() -> Running | None:
    """Return the task this thread is running, if any."""
    running: Running | None = getattr(_local, "running", None)
    return running


def set_running(running: Running | None) -> None:
    """Mark this thread as running *running* (or nothing)."""
    _local.running = running


def progress(done: int, total: int | None = None, note: str = "") -> None:
    """Record how far the running task got; raise Cancelled if it was cancelled.

    *done* and *total* are counts (items, bytes, steps); *note* a short text.
    Call it as often as you like: writes are throttled.
    """
    running = running_here()
    if running is None:
        return
    if running.cancelled.is_set():
        raise Cancelled(f"task {running.record_id} was cancelled")
    if running.soft_at is not None and time.monotonic() >= running.soft_at:
        raise TimeLimitExceeded(f"task {running.record_id} went past its time limit")
    if not isinstance(done, int) or (total is not None and not isinstance(total, int)):
        raise TypeError("progress(done, total): done and total must be integers")
    running.report(done, total, str(note))
    nudge = _writer[0]
    if nudge is not None:
        nudge()


# How to nudge this process's progress writer (the runner registers it).
_writer: list[Callable[[], None] | None] = [None]


def register_writer(nudge: Callable[[], None] | None) -> None:
    """Register the function that wakes this process's progress writer (None to forget)."""
    _writer[0] = nudge


def _database(backend: str) -> str:
    database = getattr(task_backends[backend], "database", None)
    if not isinstance(database, str):
        raise TypeError(f"TASKS[{backend!r}] is not a socketsvc backend")
    return database


def get_progress(result_id: str, backend: str = "default") -> dict[str, Any] | None:
    """Return ``{"done", "total", "note"}`` of a task (from any process), or None if none yet.

    Raises the framework's TaskResultDoesNotExist for an unknown id.
    """
    try:
        record = TaskRecord.objects.using(_database(backend)).get(id=result_id)
    except TaskRecord.DoesNotExist:
        raise TaskResultDoesNotExist(result_id) from None
    return record.progress()


def cancel(result_id: str, backend: str = "default") -> TaskResult[Any]:
    """Cancel a task: a queued one never runs; a running one stops at its next progress().

    Both end FAILED with :class:`~socketsvc.tasks.Cancelled`. A finished task is
    left as it is. Returns the task's result as it now stands.
    """
    reason = entries.error_entry(
        "socketsvc.tasks.Cancelled",
        f"socketsvc.tasks.Cancelled: cancelled at {time.strftime('%Y-%m-%d %H:%M:%S')}\n",
    )
    for attempt in range(_CONFLICT_TRIES):
        try:
            record = store.request_cancel(result_id, reason, _database(backend))
            break
        except TaskRecord.DoesNotExist:
            raise TaskResultDoesNotExist(result_id) from None
        except DatabaseError as exc:
            # A deadlock with a daemon moving the task (or its workflow) on: nothing was
            # written, so the same cancel again will do.
            if not vendors.is_conflict(exc) or attempt == _CONFLICT_TRIES - 1:
                raise
    if record.status == store.RUNNING:
        cancel_hint(result_id)
    return task_backends[backend].get_result(result_id)
