"""The daemon's task runner: worker threads that claim and run tasks, and one that keeps house.

Workers sleep until woken: by an enqueue (over the socket, ``rpc.tasks.wake``),
by the earliest ``available_at`` of a task not due yet, or by the slow safety
sweep (``TASK_SWEEP_INTERVAL``) that catches a wake-up that was lost. A wake
rouses one idle worker; a worker that claimed a task rouses the next, so a
burst spreads over the pool without every thread querying at once.

The housekeeping thread registers this daemon (a row with a heartbeat),
requeues the tasks of daemons that are gone (stopped, silent past
``TASK_LEASE``, or, on this host, dead by pid) as lost, writes progress at
most twice a second, prunes old results (``TASK_RETENTION``) and keeps the
counts ``rpc.status`` shows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from django.utils import timezone

from .. import backends
from ..conf import Config
from ..lifecycle import close_expired_connections, close_thread_connections, request_scope
from . import store
from .execute import Executor
from .lost import recover_lost, this_daemon
from .periodic import Schedule
from .runtime import Running, register_writer
from .scheduler import Scheduler
from .wake import serve_in_process

log = structlog.get_logger("socketsvc.tasks")

PROGRESS_INTERVAL = 0.5


@dataclass(frozen=True)
class Served:
    """What this daemon's runner serves: backend aliases, queues, the database, the class."""

    aliases: tuple[str, ...]
    queues: frozenset[str] | None
    database: str
    backend_class: type


class TaskRunner:
    """Claims and runs this daemon's tasks (see the module docstring)."""

    def __init__(self, served: Served, config: Config, schedules: list[Schedule]) -> None:
        self.served = served
        self.config = config
        self.scheduler = Scheduler(
            schedules, served.database, lambda: self.config.DB_CHECK_AFTER_IDLE, self.wake
        )
        self.worker = this_daemon()
        self.executor = Executor(
            self.worker.id,
            served.database,
            served.backend_class,
            lambda: self.config.DB_CHECK_AFTER_IDLE,
            lambda: not self._hard_stop.is_set(),
            self._flush,
        )
        self.running: dict[str, Running] = {}
        self.counts: dict[str, int] = {}
        self.counts_at = 0.0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wakes = 0
        self._idle = 0
        self._stopping = False
        self._registered = threading.Event()
        self._hard_stop = threading.Event()
        self._house = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counts_wanted = False

    # -- the daemon's side ---------------------------------------------------------

    def start(self) -> None:
        """Start the housekeeping thread and the workers."""
        serve_in_process(self)
        register_writer(self._house.set)
        self._spawn(self._keep_house, "socketsvc-tasks-house")
        for n in range(self.config.TASK_WORKERS):
            self._spawn(self._work, f"socketsvc-task-{n + 1}")

    def wake(self, queue: str | None = None) -> None:
        """A task may be ready (any thread): rouse one idle worker."""
        queues = self.served.queues
        if queue is not None and queues is not None and queue not in queues:
            return
        with self._cond:
            self._wakes += 1
            self._cond.notify()

    def cancel_hint(self, record_id: str) -> None:
        """A running task was asked to stop: its next progress() raises Cancelled."""
        running = self.running.get(record_id)
        if running is not None:
            running.cancelled.set()

    def begin_drain(self) -> None:
        """Claim nothing more, schedule nothing more; running tasks go on until they end."""
        self.scheduler.stop(0.0)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def busy(self) -> int:
        """Return how many tasks are running."""
        return len(self.running)

    def stop(self, timeout: float) -> None:
        """Stop (after the drain): let threads go, flush progress, record this daemon stopped."""
        self.begin_drain()
        self._hard_stop.set()
        self._house.set()
        deadline = time.monotonic() + timeout
        self.scheduler.stop(timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        serve_in_process(None)
        register_writer(None)

    def status(self) -> dict[str, Any]:
        """Return the runner's part of ``rpc.status`` (counts as of ``counts_age`` seconds ago)."""
        if time.monotonic() - self.counts_at > 5.0:
            self._counts_wanted = True
            self._house.set()
        return {
            "worker_id": self.worker.id,
            "workers": self.config.TASK_WORKERS,
            "running": sorted(self.running),
            "queues": sorted(self.served.queues) if self.served.queues is not None else "all",
            "counts": dict(self.counts),
            "counts_age": round(time.monotonic() - self.counts_at, 3) if self.counts_at else None,
            **self.scheduler.status(),
        }

    # -- worker threads ------------------------------------------------------------

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        try:
            while not self._registered.wait(1.0):
                if self._stopping:
                    return
            while not self._stopping:
                wakes = self._wakes
                record, more = self._claim()
                if record is None:
                    self._sleep(wakes)
                    continue
                if more:
                    self.wake()  # another idle worker takes the next one
                running = Running(record.id)
                self.running[record.id] = running
                try:
                    self.executor.run(record, running)
                except Exception:
                    log.exception("task_run_failed", task_id=record.id)
                finally:
                    self.running.pop(record.id, None)
        finally:
            close_thread_connections()

    def _claim(self) -> tuple[Any, bool]:
        served = self.served
        try:
            with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                return store.claim(self.worker.id, served.aliases, served.queues, served.database)
        except Exception as exc:
            log.warning(
                "task_claim_failed", error=str(exc), unreachable=backends.is_connection_error(exc)
            )
            self._hard_stop.wait(1.0)
            return None, False

    def _sleep(self, wakes: int) -> None:
        """Wait for a wake-up, the next due task or the safety sweep.

        A connection that reaches ``CONN_MAX_AGE`` meanwhile is closed when it
        does, and the wait goes on: an idle thread holds no session past its
        age and opens none until there is work (or the sweep).
        """
        timeout = self.config.TASK_SWEEP_INTERVAL
        served = self.served
        try:
            with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                due = store.next_due(served.aliases, served.queues, served.database)
        except Exception:
            due = None
        if due is not None:
            timeout = min(timeout, max(0.0, (due - timezone.now()).total_seconds()))
        deadline = time.monotonic() + timeout
        while True:
            expiry = close_expired_connections()
            left = deadline - time.monotonic()
            with self._cond:
                if self._wakes != wakes or self._stopping or left <= 0:
                    return
                self._idle += 1
                try:
                    self._cond.wait(left if expiry is None else min(left, expiry))
                finally:
                    self._idle -= 1

    # -- housekeeping --------------------------------------------------------------

    def _keep_house(self) -> None:
        try:
            self._register()
            next_beat = next_prune = 0.0
            while not self._hard_stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.config.TASK_HEARTBEAT
                    self._safely(self._beat)
                if self.config.TASK_RETENTION is not None and now >= next_prune:
                    next_prune = now + 3600.0
                    self._safely(self._prune)
                if self._counts_wanted:
                    self._counts_wanted = False
                    self._safely(self._count)
                for running in list(self.running.values()):
                    self._flush(running)
                wait = min(next_beat - time.monotonic(), 30.0)
                expiry = close_expired_connections()
                self._house.wait(max(0.05, wait if expiry is None else min(wait, expiry)))
                self._house.clear()
                if self.running:
                    self._hard_stop.wait(PROGRESS_INTERVAL)  # at most two writes a second
        finally:
            if self._registered.is_set():
                self._safely(lambda: store.stop_worker(self.worker.id, self.served.database))
            close_thread_connections()

    def _safely(self, action: Any) -> None:
        try:
            with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                action()
        except Exception as exc:
            log.warning(
                "task_housekeeping_failed", action=getattr(action, "__name__", "?"), error=str(exc)
            )

    def _register(self) -> None:
        """Record this daemon, retrying while the database is unreachable; then recover."""
        delay = 0.5
        while not self._hard_stop.is_set():
            now = timezone.now()
            self.worker.started_at = self.worker.heartbeat_at = now
            try:
                with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                    store.register_worker(self.worker, self.served.database)
            except Exception as exc:
                log.warning("task_runner_waits_for_database", error=str(exc), retry_in=delay)
                self._hard_stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info(
                "task_runner_started", worker_id=self.worker.id, workers=self.config.TASK_WORKERS
            )
            self._safely(self._recover)
            self._registered.set()
            self.scheduler.start()
            self.wake()
            return

    def _beat(self) -> None:
        store.heartbeat(self.worker.id, self.served.database)
        self._recover()

    def _recover(self) -> None:
        """Requeue (or fail) what gone daemons left RUNNING."""
        lease = timedelta(seconds=self.config.TASK_LEASE)
        requeued, failed, names = recover_lost(self.worker, lease, self.served.database)
        if requeued or failed:
            log.warning("tasks_of_lost_daemons", daemons=names, requeued=requeued, failed=failed)
            self.wake()

    def _prune(self) -> None:
        retention = self.config.TASK_RETENTION
        if retention is not None:
            deleted = store.prune(timedelta(seconds=retention), self.served.database)
            if deleted:
                log.info("task_results_pruned", deleted=deleted, older_than_s=retention)

    def _count(self) -> None:
        self.counts = store.counts(self.served.database)
        self.counts_at = time.monotonic()

    def _flush(self, running: Running) -> None:
        """Write a running task's latest progress; learn there whether it was cancelled."""
        pending = running.take()
        if pending is None:
            return
        done, total, note = pending
        try:
            with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                still_wanted = store.write_progress(
                    running.record_id, done, total, note, self.served.database
                )
        except Exception as exc:
            log.warning("task_progress_not_written", task_id=running.record_id, error=str(exc))
            return
        if not still_wanted:
            running.cancelled.set()
