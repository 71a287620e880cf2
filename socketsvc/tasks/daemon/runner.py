"""The daemon's task runner: worker threads that claim and run tasks, and one that keeps house.

Workers sleep until woken: by an enqueue (over the socket, ``rpc.tasks.wake``),
by the earliest ``available_at`` of a task not due yet, or by the slow safety
sweep (``TASK_SWEEP_INTERVAL``) that catches a wake-up that was lost. A wake
rouses one idle worker; a worker that claimed a task rouses the next, so a
burst spreads over the pool without every thread querying at once.

The lease thread registers this daemon (a row whose lease it renews every
``TASK_HEARTBEAT``, see :mod:`socketsvc.tasks.daemon.lease`): a worker claims only
while the lease is safely held, and a claim or run holds it. The
housekeeping thread requeues the tasks of daemons that are gone (stopped,
their lease expired, or, on this host, dead by pid) as lost, writes progress
at most twice a second, prunes old results (``TASK_RETENTION``) and keeps the
counts ``rpc.status`` shows.
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.utils import timezone

from socketsvc.conf import Config
from socketsvc.db import vendors
from socketsvc.db.lifecycle import close_thread_connections, idle_wait, request_scope
from socketsvc.models import TaskStatus
from socketsvc.observe import events
from socketsvc.tasks import entries, store
from socketsvc.tasks.daemon import limiting
from socketsvc.tasks.daemon.deadlines import CANCEL, Deadlines
from socketsvc.tasks.daemon.execute import Executor
from socketsvc.tasks.daemon.lease import KillSwitch, Lease
from socketsvc.tasks.daemon.listen import DatabaseWakes
from socketsvc.tasks.daemon.lost import recover_lost, this_daemon
from socketsvc.tasks.daemon.scheduler import Scheduler
from socketsvc.tasks.limits import QueueLimits
from socketsvc.tasks.periodic import Schedule
from socketsvc.tasks.runtime import Running, register_writer
from socketsvc.tasks.wake import serve_in_process

log = structlog.get_logger(__name__)

PROGRESS_INTERVAL = 0.5
# The most tasks one claim takes: for its own thread and idle ones.
MAX_CLAIM = 16
# After its hard limit, a run that kept this process from stopping it (it holds the
# interpreter) has the process killed by the kernel this much later; the run is then taken
# back as a lost run past its hard limit (store.lost).
KERNEL_KILL_AFTER = 2.0
_UNRECORDED = entries.error_entry(
    "socketsvc.tasks.WorkerLost",
    "socketsvc.tasks.WorkerLost: the run ended, but how it ended could not be recorded "
    "(see the daemon's log); taken back as a lost run\n",
)


@dataclass(frozen=True)
class Served:
    """What this daemon's runner serves: backend aliases, queues, the database, the class,
    and the queues' limits."""

    aliases: tuple[str, ...]
    queues: frozenset[str] | None
    database: str
    backend_class: type
    queue_limits: dict[str, QueueLimits] = field(default_factory=dict)


class TaskRunner:
    """Claims and runs this daemon's tasks (see the module docstring)."""

    def __init__(self, served: Served, config: Config, schedules: list[Schedule]) -> None:
        self.served = served
        self.config = config
        self.scheduler = Scheduler(
            schedules, served.database, lambda: self.config.DB_CHECK_AFTER_IDLE, self.wake
        )
        self.worker = this_daemon()
        self.lease = Lease(config.TASK_LEASE)
        self.executor = Executor(
            served.database,
            served.backend_class,
            lambda: self.config.DB_CHECK_AFTER_IDLE,
            lambda: not self._hard_stop.is_set(),
            self._flush,
        )
        self.wakes = DatabaseWakes(self, served.database, served.aliases, served.queues, config)
        # Passes a wake this process cannot serve to its siblings (set under a master).
        self.forward: Callable[[], None] | None = None
        self.running: dict[str, Running] = {}
        self.deadlines = Deadlines(self.running, self.stop_hard)
        # Set in a worker process under a master: a run stuck past its hard limit is stopped
        # by ending this process (the master starts another). Alone, it cannot be.
        self.replaceable = False
        self._admit = functools.partial(
            limiting.admit, using=served.database, queues=served.queue_limits
        )
        self.counts: dict[str, int] = {}
        self.counts_at = 0.0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wakes = 0
        self._idle = 0
        self._stopping = False
        self._registered = threading.Event()
        self._renewed = threading.Event()
        self._declared_lost = threading.Event()
        self._hard_stop = threading.Event()
        self._house = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counts_wanted = False
        # Claims whose commit is in doubt (worker id, moment), and runs of ours whose ending
        # could not be written: housekeeping puts them right (see _settle_doubts).
        self._doubtful_claims: list[tuple[str, datetime]] = []
        self._unrecorded: list[Any] = []
        # Runs recorded as stopped past their hard limit while their thread went on, and the
        # threads that ran them (each leaves once its run returns, if it ever does).
        self._forced_out: set[str] = set()
        self._retired: set[str] = set()
        self._run_threads: dict[str, str] = {}
        self._thread_state = threading.local()
        # Tasks one thread claimed for idle ones (see _claim_for_idle), in the order to start.
        self._handoff: collections.deque[Any] = collections.deque()

    # -- the daemon's side ---------------------------------------------------------

    def start(self) -> None:
        """Start the housekeeping thread and the workers."""
        serve_in_process(self)
        register_writer(self._house.set)
        self.wakes.start()
        self.deadlines.start()
        self._spawn(self._hold_lease, "socketsvc-tasks-lease")
        self._spawn(self._keep_house, "socketsvc-tasks-house")
        for n in range(self.config.TASK_WORKERS):
            self._spawn(self._work, f"socketsvc-task-{n + 1}")

    def wake(self, queue: str | None = None, forward: bool = True) -> None:
        """A task may be ready (any thread): rouse one idle worker.

        With none idle here, the wake goes on to this daemon's other worker
        processes (through the master) unless it came from there.
        """
        queues = self.served.queues
        if queue is not None and queues is not None and queue not in queues:
            return
        with self._cond:
            self._wakes += 1
            self._cond.notify()
            idle = self._idle
        if forward and not idle and self.forward is not None:
            self.forward()

    def cancel_hint(self, record_id: str) -> None:
        """A running task was asked to stop: Cancelled is raised in it."""
        running = self.running.get(record_id)
        if running is not None:
            running.cancelled.set()
            self.deadlines.poke()

    def begin_drain(self) -> None:
        """Claim nothing more, schedule nothing more; running tasks go on until they end."""
        self.scheduler.stop(0.0)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def idle_workers(self) -> int:
        """Return how many task workers wait for work."""
        return self._idle

    @property
    def busy(self) -> int:
        """Return how many tasks are running."""
        return len(self.running)

    def stop(self, timeout: float) -> None:
        """Stop (after the drain): let threads go, flush progress, record this daemon stopped."""
        self.begin_drain()
        self._hard_stop.set()
        self._house.set()
        self._renewed.set()
        deadline = time.monotonic() + timeout
        self.scheduler.stop(timeout)
        self.wakes.stop()
        self.deadlines.stop()
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
            "wakes": self.wakes.status(),
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
                if self._run_handed_over():
                    if threading.current_thread().name in self._retired:
                        return
                    continue
                if not self.lease.hold():
                    self._renewed.clear()
                    self._renewed.wait(self.config.TASK_HEARTBEAT)
                    continue
                records: list[Any] = []
                more = False
                try:
                    records, more = self._claim_for_idle()
                    if records:
                        self._run(records[0])
                finally:
                    self.lease.release()
                if threading.current_thread().name in self._retired:
                    return  # its run was abandoned past its hard limit; another took its place
                if not records and not more:
                    self._sleep(wakes)
            # Draining: what was claimed for this process still runs before it stops.
            while self._run_handed_over():
                pass
        finally:
            close_thread_connections()

    def _claim_for_idle(self) -> tuple[list[Any], bool]:
        """Claim a task for this thread and, in the same transaction, one for each idle
        worker thread (each with its part of the lease held); hand those over to them.

        A burst of tasks reaching idle threads then starts several runs with one
        statement and one commit, instead of a chain of claims each waking the
        next thread. A thread finishing its run takes a handed-over task before
        claiming again, so none waits for long.
        """
        extra = 0
        with self._lock:
            idle = max(0, self._idle - len(self._handoff))
        while extra < min(idle, MAX_CLAIM - 1) and self.lease.hold():
            extra += 1
        records: list[Any] = []
        more = False
        try:
            records, more = self._claim(1 + extra)
        finally:
            handed = records[1:]
            for _ in range(extra - len(handed)):
                self.lease.release()
        if handed:
            with self._lock:
                self._handoff.extend(handed)
            for _ in handed:
                self.wake(forward=False)
        if more:
            self.wake()  # another idle worker (here or in a sibling) takes the next one
        return records, more

    def _run_handed_over(self) -> bool:
        """Run a task another thread claimed for this one, if there is one (its part of the
        lease was held for it: released here)."""
        with self._lock:
            if not self._handoff:
                return False
            record = self._handoff.popleft()
        try:
            self._run(record)
        finally:
            self.lease.release()
        return True

    def _run(self, record: Any) -> None:
        running = Running(record.id, (record.claimed_by, record.claims), record=record)
        limits = record.limits or {}
        started = time.monotonic()
        if limits.get("timeout") is not None:
            running.soft_at = started + float(limits["timeout"])
        if limits.get("hard_timeout") is not None:
            running.hard_at = started + float(limits["hard_timeout"])
        self.running[record.id] = running
        self._run_threads[record.id] = threading.current_thread().name
        if running.soft_at is not None or running.hard_at is not None:
            self.deadlines.poke()
        recorded = False
        switch = self._run_switch() if self.replaceable and running.hard_at is not None else None
        if switch is not None and running.hard_at is not None:
            # A run holding the interpreter (one long C call) keeps every thread of this process
            # from acting, stop_hard included: the kernel ends the process a little later.
            switch.arm(running.hard_at + KERNEL_KILL_AFTER - time.monotonic())
        try:
            recorded = self.executor.run(record, running)
        except Exception:
            log.exception("task_run_failed", task_id=record.id)
        finally:
            if switch is not None:
                switch.disarm()
            if not recorded and record.id not in self._forced_out:
                # Still RUNNING under our claim, and nobody else will look at it while
                # this process lives: housekeeping takes it back as a lost run.
                with self._lock:
                    self._unrecorded.append(record)
                self._house.set()
            self.running.pop(record.id, None)
            self._run_threads.pop(record.id, None)
        if limiting.needs(record, self.served.queue_limits):
            self._safely(lambda: self._released(record))

    def stop_hard(self, running: Running, why: str) -> None:
        """A run is still going past its hard limit (or a cancel's grace): stop it by force.

        In a worker process under a master, the process ends at once (SIGKILL)
        and the master starts another. Nothing is written first: the run, and
        any other run of this process, stay RUNNING under its claim until the
        process is gone, then a sibling takes them back as lost runs (at once,
        by pid), recording a run past its hard limit as TimeLimitExceeded and a
        cancelled one as Cancelled (:func:`socketsvc.tasks.store.lost`): nothing
        released can start again while this process still runs.

        Alone, a thread cannot be stopped: its ending is recorded (no retry,
        since it may still be running), whatever it writes later is refused,
        and a new worker thread takes its place.
        """
        record = running.record
        self._forced_out.add(record.id)
        cancelled = why == CANCEL
        events.time_limit_kill(record.task_path, record.queue_name)
        limit = (record.limits or {}).get("hard_timeout")
        what = (
            "cancelled; it did not stop" if cancelled else f"went past its hard limit ({limit:g} s)"
        )
        fields = {"task_id": record.id, "task": record.task_path, "attempt": record.attempts}
        if self.replaceable:
            self.begin_drain()
            log.error(
                "task_stopped_hard",
                **fields,
                why=why,
                running=sorted(self.running),
                hint="this worker process ends now; the master starts another, and its runs "
                "are taken back once it is gone",
            )
            os.kill(os.getpid(), signal.SIGKILL)
            return
        text = (
            f"the run {what}; it could not be stopped (no worker processes: run the daemon "
            "with --processes 2 or more to stop such runs), and goes on in its thread, its "
            "result ignored"
        )
        self._safely(lambda: self._write_forced(record, text, cancelled))
        thread = self._run_threads.get(record.id)
        if thread is not None:
            self._retired.add(thread)
        self._spawn(self._work, f"socketsvc-task-{len(self._threads) + 1}")
        log.error(
            "task_not_stoppable",
            **fields,
            why=why,
            hint="without --processes a run stuck in C code or a system call cannot be stopped; "
            "it was recorded FAILED and a new worker thread took its place",
        )

    def _write_forced(self, record: Any, text: str, cancelled: bool) -> None:
        """Record a run this process gave up on as FAILED (never retried: it may go on)."""
        path = "socketsvc.tasks.Cancelled" if cancelled else "socketsvc.tasks.TimeLimitExceeded"
        written = store.finish(
            record,
            record.claimed_by,
            status=TaskStatus.FAILED,
            using=self.served.database,
            error=entries.error_entry(path, f"{path}: {text}\n"),
        )
        if written is not None:
            events.task_finished_elsewhere(
                record.task_path, record.queue_name, store.ending_of(path)
            )

    def _run_switch(self) -> KillSwitch:
        """Return this worker thread's kernel timer for the hard limits of its runs."""
        switch: KillSwitch | None = getattr(self._thread_state, "switch", None)
        if switch is None:
            switch = self._thread_state.switch = KillSwitch()
        return switch

    def _released(self, record: Any) -> None:
        """A run under a concurrency limit or a lock key ended: wake the next one it held."""
        if limiting.released(record, self.served.database, self.served.queue_limits):
            self.wake(record.queue_name)

    def _claim(self, want: int) -> tuple[list[Any], bool]:
        served = self.served
        worker_id, now = self.worker.id, timezone.now()
        try:
            with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                # The claim's moment, once the connection is ready (a reconnect, an outage's
                # wait come before it): each run's started_at, and how a doubt finds it.
                now = timezone.now()
                return store.claim_many(
                    worker_id,
                    served.aliases,
                    served.queues,
                    served.database,
                    now,
                    self._admit,
                    want,
                )
        except store.DeclaredLost:
            self._lost(holding=want)
            return [], False
        except Exception as exc:
            unreachable = vendors.is_connection_error(exc)
            log.warning("task_claim_failed", error=str(exc), unreachable=unreachable)
            if unreachable and not vendors.is_connect_failure(exc):
                # The connection broke under the claim: whether it committed is unknown, and a
                # task it took would stay RUNNING under this live daemon. Housekeeping finds
                # it by the claim's moment and puts it back.
                with self._lock:
                    self._doubtful_claims.append((worker_id, now))
                self._house.set()
            self._hard_stop.wait(1.0)
            return [], False

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

        def woken() -> bool:
            return self._wakes != wakes or self._stopping

        def wait(seconds: float) -> None:
            with self._cond:
                if woken():  # under the lock: a wake between the checks is not missed
                    return
                self._idle += 1
                try:
                    self._cond.wait(seconds)
                finally:
                    self._idle -= 1

        idle_wait(wait, timeout, woken)

    # -- the lease -----------------------------------------------------------------

    def _hold_lease(self) -> None:
        """Register, then renew the lease every TASK_HEARTBEAT (every second while failing)."""
        try:
            self._register()
            while not self._hard_stop.is_set():
                pace = self.config.TASK_HEARTBEAT
                if self._declared_lost.is_set():
                    self._register()
                    continue
                sent = time.monotonic()
                try:
                    with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                        held = store.renew(self.worker.id, self.lease.seconds, self.served.database)
                except Exception as exc:
                    log.warning("task_lease_renewal_failed", error=str(exc))
                    pace = min(pace, 1.0)
                else:
                    if held:
                        self.lease.renewed(sent)
                        self._renewed.set()
                    else:
                        self._lost(holding=0)
                        continue
                idle_wait(self._hard_stop.wait, pace, self._hard_stop.is_set)
        finally:
            self._record_stop()
            close_thread_connections()

    def _record_stop(self) -> None:
        """Record this daemon stopped, unless a run is still in flight.

        A run the drain gave up on (``DRAIN_TIMEOUT``) goes on in its thread
        until the process ends, so the daemon must not say it stopped: another
        would run the task again at once, beside it. Its lease is left to run
        out instead; a daemon on this host takes the run back as soon as the
        process is gone, one elsewhere once the lease has expired, and the
        kill switch ends the process before that if it lingers.
        """
        in_flight = self.lease.revoke()  # from here on no claim starts
        if not self._registered.is_set():
            return
        if in_flight:
            log.warning(
                "task_runs_abandoned",
                worker_id=self.worker.id,
                runs_in_flight=in_flight,
                running=sorted(self.running),
                hint="the drain ended before these runs did (DRAIN_TIMEOUT); they are run "
                "again once this process has exited",
            )
            return
        self._safely(lambda: store.stop_worker(self.worker.id, self.served.database))

    def _register(self) -> None:
        """Record this daemon (a fresh id), retrying while the database is unreachable."""
        delay = 0.5
        while not self._hard_stop.is_set():
            worker = this_daemon()
            worker.started_at = worker.heartbeat_at = timezone.now()
            sent = time.monotonic()
            try:
                with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                    store.register_worker(worker, self.lease.seconds, self.served.database)
            except Exception as exc:
                log.warning("task_runner_waits_for_database", error=str(exc), retry_in=delay)
                self._hard_stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            again = self._declared_lost.is_set()
            self.worker = worker
            self.lease.renewed(sent)
            self._declared_lost.clear()
            log.info(
                "task_runner_registered_again" if again else "task_runner_started",
                worker_id=worker.id,
                workers=self.config.TASK_WORKERS,
                lease_s=self.lease.seconds,
            )
            if not self._registered.is_set():
                self._registered.set()
                self._house.set()  # recover what gone daemons left, at once
                self.scheduler.start()
            self._renewed.set()
            self.wake()
            return

    def _lost(self, holding: int) -> None:
        """This daemon's row was marked stopped: its runs may be running elsewhere already.

        With nothing in flight (beyond the *holding* claim that learned it) it
        registers again under a new id; a run in flight cannot be stopped in its
        thread, so the process ends at once (the master, or the service manager,
        starts a fresh one) rather than let it overlap the run that replaced it.
        """
        in_flight = self.lease.revoke() - holding
        if self._declared_lost.is_set() and in_flight <= 0:
            return
        log.error(
            "task_daemon_declared_lost",
            worker_id=self.worker.id,
            runs_in_flight=in_flight,
            hint="another daemon found this one's lease expired (a pause longer than "
            "TASK_LEASE?)"
            + ("; stopping this process, whose runs may be running elsewhere" if in_flight else ""),
        )
        if in_flight > 0:
            os.kill(os.getpid(), signal.SIGKILL)
        self._declared_lost.set()
        self._renewed.clear()

    # -- housekeeping --------------------------------------------------------------

    def _keep_house(self) -> None:
        try:
            while not self._registered.wait(1.0):
                if self._hard_stop.is_set():
                    return
            next_recovery = next_prune = 0.0
            while not self._hard_stop.is_set():
                now = time.monotonic()
                if now >= next_recovery:
                    next_recovery = now + self.config.TASK_HEARTBEAT
                    self._safely(self._recover)
                    self._safely(self._expire)
                    if self.running:
                        self._safely(self._learn_cancels)
                    if self._doubtful_claims or self._unrecorded:
                        self._safely(self._settle_doubts)
                if now >= next_prune:
                    next_prune = now + 3600.0
                    self._safely(self._prune)
                if self._counts_wanted:
                    self._counts_wanted = False
                    self._safely(self._count)
                for running in list(self.running.values()):
                    self._flush(running)
                wait = max(0.05, min(next_recovery - time.monotonic(), 30.0))
                idle_wait(self._house.wait, wait, self._house.is_set)
                self._house.clear()
                if self.running:
                    self._hard_stop.wait(PROGRESS_INTERVAL)  # at most two writes a second
        finally:
            close_thread_connections()

    def _safely(self, action: Any) -> None:
        try:
            with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                action()
        except Exception as exc:
            log.warning(
                "task_housekeeping_failed", action=getattr(action, "__name__", "?"), error=str(exc)
            )

    def _recover(self) -> None:
        """Requeue (or fail) what gone daemons left RUNNING."""
        requeued, failed, names = recover_lost(self.worker, self.served.database)
        if requeued or failed:
            log.warning("tasks_of_lost_daemons", daemons=names, requeued=requeued, failed=failed)
            self.wake()

    def _settle_doubts(self) -> None:
        """Put back what a claim in doubt took; take back runs whose ending went unwritten.

        Each is done once it succeeded (the database answered); until then it
        is tried again at every round.
        """
        database = self.served.database
        while self._doubtful_claims:
            worker_id, moment = self._doubtful_claims[0]
            for record in store.release_doubtful_claim(worker_id, moment, database):
                log.warning(
                    "task_claim_put_back",
                    task_id=record.id,
                    hint="the connection broke as the claim committed; the task was put back "
                    "in its place, its attempt not counted",
                )
                self.wake()
            with self._lock:
                self._doubtful_claims.pop(0)
        while self._unrecorded:
            record = self._unrecorded[0]
            status = store.abandon(record, record.claimed_by, _UNRECORDED, database)
            if status is not None:
                log.error("task_run_taken_back", task_id=record.id, status=status)
                self.wake()
            with self._lock:
                self._unrecorded.pop(0)

    def _expire(self) -> None:
        """Fail READY tasks that expired before a claim reached them."""
        expired = limiting.expire_due(timezone.now(), self.served.database)
        if expired:
            log.info("tasks_expired", expired=expired)

    def _learn_cancels(self) -> None:
        """Learn of cancels asked on other hosts (this host's come over the socket)."""
        for record_id in store.cancel_requested(list(self.running), self.served.database):
            self.cancel_hint(record_id)

    def _prune(self) -> None:
        limiting.prune(timedelta(days=1), self.served.database)
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
        with running.writing:
            pending = running.take()
            if pending is None:
                return
            done, total, note = pending
            try:
                with request_scope(self.config.DB_CHECK_AFTER_IDLE):
                    still_wanted = store.write_progress(
                        running.record_id, running.fence, done, total, note, self.served.database
                    )
            except Exception as exc:
                log.warning("task_progress_not_written", task_id=running.record_id, error=str(exc))
                return
        if not still_wanted:
            running.cancelled.set()
