"""Time limits and cancels of running tasks: raised inside them, then enforced by force.

One thread watches this process's runs. At a run's soft limit (``@limits(
timeout=...)``), or when it is cancelled, it raises
:class:`~socketsvc.tasks.TimeLimitExceeded` (or :class:`~socketsvc.tasks.Cancelled`)
inside the task's thread, at its next Python bytecode (an ``async def`` task:
its coroutine is cancelled). A task stuck in C code or a system call never
reaches a bytecode: at its hard limit (or ``CANCEL_GRACE`` after a cancel that
did not stop it) the runner stops it by force (:meth:`TaskRunner.stop_hard`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from socketsvc.db.lifecycle import close_thread_connections
from socketsvc.tasks.policy import Cancelled, TimeLimitExceeded
from socketsvc.tasks.runtime import Running

log = structlog.get_logger(__name__)

# A cancelled run that has not stopped this long after it was told is stopped by force.
CANCEL_GRACE = 10.0
_IDLE_WAIT = 5.0

TIME_LIMIT, CANCEL = "time limit", "cancel"


class Deadlines:
    """Watches *runs* (the runner's dict of Running, by task id) from a thread of its own."""

    def __init__(self, runs: dict[str, Running], stop_hard: Callable[[Running, str], None]) -> None:
        self._runs = runs
        self._stop_hard = stop_hard
        self._cond = threading.Condition()
        self._stopped = False
        self._forced: set[str] = set()
        self._thread = threading.Thread(
            target=self._watch, name="socketsvc-task-limits", daemon=True
        )

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def poke(self) -> None:
        """A run started or was cancelled: look again now."""
        with self._cond:
            self._cond.notify()

    def _watch(self) -> None:
        try:
            self._loop()
        finally:
            close_thread_connections()  # stop_hard writes from this thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
            wait = _IDLE_WAIT
            now = time.monotonic()
            for running in list(self._runs.values()):
                wait = min(wait, self._check(running, now))
            with self._cond:
                if not self._stopped:
                    self._cond.wait(max(wait, 0.005))

    def _check(self, running: Running, now: float) -> float:
        """Act on *running*'s deadlines that passed; return seconds until its next one."""
        if running.cancelled.is_set() and running.stop(CANCEL, Cancelled):
            log.warning("task_cancel_raised", task_id=running.record_id)
        soft = running.soft_at
        if soft is not None and now >= soft and running.stop(TIME_LIMIT, TimeLimitExceeded):
            log.warning("task_time_limit_raised", task_id=running.record_id)
        hard = self._hard_at(running)
        if hard is not None and now >= hard and running.in_task:
            if running.record_id not in self._forced:
                self._forced.add(running.record_id)
                self._stop_hard(running, running.stopping or TIME_LIMIT)
            return _IDLE_WAIT
        waits = [at - now for at in (running.soft_at, hard) if at is not None and at > now]
        return min(waits, default=_IDLE_WAIT)

    @staticmethod
    def _hard_at(running: Running) -> float | None:
        hard = running.hard_at
        if running.stopping == CANCEL:
            forced = running.stopping_at + CANCEL_GRACE
            hard = forced if hard is None else min(hard, forced)
        return hard
