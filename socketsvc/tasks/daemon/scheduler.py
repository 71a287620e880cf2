"""The daemon's scheduler: enqueue each due slot of each periodic task, exactly once in all.

Every daemon with task workers runs one. It sleeps until the earliest next
slot (at most a minute, so a stepped clock or a pause from the admin is seen
soon), then, per schedule, decides in one transaction which slots to run: it
advances the schedule row's ``last_slot`` with an update conditional on the
value it read, and only the daemon whose update took writes the runs. A
unique key on (schedule, slot) in the task table backs that up. What to do
about slots that passed while no daemon ran is the schedule's ``catch_up``:
a slot is *missed* if it came before this scheduler started watching.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from socketsvc.db.lifecycle import close_thread_connections, idle_wait, request_scope
from socketsvc.models import ScheduleRecord, TaskRecord, TaskStatus
from socketsvc.observe import events
from socketsvc.tasks import store
from socketsvc.tasks.backend import SocketServiceBackend, to_result
from socketsvc.tasks.compat import task_enqueued
from socketsvc.tasks.limits import controls_for, limits_of
from socketsvc.tasks.periodic import MAX_CATCH_UP, Schedule, ScheduleError
from socketsvc.tasks.policy import policy_of

log = structlog.get_logger(__name__)

MAX_SLEEP = 60.0


@dataclass(frozen=True)
class Decision:
    """What one look at a schedule decided: the slots to run, and the last slot decided."""

    run: list[datetime]
    skipped: int
    last_slot: datetime | None


def decide(
    schedule: Schedule, last_slot: datetime | None, now: datetime, watching_since: datetime
) -> Decision:
    """Return which slots in (last_slot, now] to run (a pure function of its arguments).

    A schedule seen for the first time starts from *now*. A slot is *missed*
    if it came before *watching_since* (no daemon was running) or is later
    than on time (a suspended machine, a clock stepped forward); the
    schedule's ``catch_up`` says whether the latest missed slot runs, none,
    or all (up to 100). Current slots always run.
    """
    if last_slot is None:
        return Decision([], 0, now)
    due = schedule.slots(last_slot, now, limit=MAX_CATCH_UP)
    if not due:
        return Decision([], 0, last_slot)
    current = [s for s in due if s >= watching_since and schedule.on_time(s, now)]
    missed = [s for s in due if s not in current]
    if schedule.catch_up == "all":
        run = due
    elif schedule.catch_up == "latest" and missed and not current:
        run = missed[-1:]
    else:
        run = current
    return Decision(run, len(due) - len(run), due[-1])


def _active_run(schedule: Schedule, database: str) -> bool:
    return (
        TaskRecord.objects.using(database)
        .filter(schedule=schedule.name, status__in=(TaskStatus.READY, TaskStatus.RUNNING))
        .exists()
    )


def enqueue_run(schedule: Schedule, database: str, slot: datetime | None) -> TaskRecord:
    """Store one run of *schedule* (for *slot*, or now if None) and send task_enqueued."""
    task = schedule.task
    run_after = None
    if slot is not None and schedule.jitter:
        run_after = slot + timedelta(seconds=random.uniform(0, schedule.jitter))  # noqa: S311
    now = timezone.now()
    args, kwargs = list(schedule.args), dict(schedule.kwargs)
    record = store.new_record(
        task_path=schedule.task_path,
        queue_name=task.queue_name,
        backend_name=task.backend,
        priority=task.priority,
        args=args,
        kwargs=kwargs,
        run_after=run_after,
        max_attempts=policy_of(task.func).attempts,
        now=now,
        controls=controls_for(limits_of(task.func), args, kwargs, now),
        schedule=schedule.name,
        slot=slot,
    )
    store.insert(record, database)
    task_enqueued.send(SocketServiceBackend, task_result=to_result(record, task))
    events.task_enqueued(schedule.task_path, task.queue_name)
    if slot is not None:
        lag = max(0.0, (now - slot).total_seconds())
        transaction.on_commit(lambda: events.schedule_ran(schedule.name, lag), using=database)
    return record


class Scheduler:
    """Runs the schedules for one daemon (see the module docstring)."""

    def __init__(
        self,
        schedules: list[Schedule],
        database: str,
        check_idle_after: Callable[[], float],
        wake: Callable[[str | None], None],
    ) -> None:
        self.schedules = schedules
        self.database = database
        self._check_idle_after = check_idle_after
        self._wake = wake
        self.next_slots: dict[str, datetime | None] = {}
        self.watching_since = timezone.now()
        # Slots this scheduler decided, and looks that found another daemon had decided them.
        self.decided = 0
        self.decided_elsewhere = 0
        self._seen: dict[str, datetime | None] = {}
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        for schedule in schedules:
            backend = schedule.task.get_backend()
            if not isinstance(backend, SocketServiceBackend):
                raise ScheduleError(
                    f"schedule {schedule.name!r}: its task's backend {schedule.task.backend!r} "
                    "is not socketsvc's; periodic tasks are run by socketsvc"
                )

    def start(self) -> None:
        """Start the scheduler thread."""
        if not self.schedules:
            return
        self._thread = threading.Thread(target=self._run, name="socketsvc-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop deciding slots."""
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        """Return the schedules' part of ``rpc.status``: how many, and the next due slot."""
        upcoming = [(slot, name) for name, slot in self.next_slots.items() if slot is not None]
        soonest = min(upcoming, default=None)
        return {
            "schedules": len(self.schedules),
            "decided": self.decided,
            "decided_elsewhere": self.decided_elsewhere,
            "next": None
            if soonest is None
            else {"schedule": soonest[1], "slot": soonest[0].isoformat()},
        }

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._safely(self._declare)
            while not self._stop.is_set():
                now = timezone.now()
                for schedule in self.schedules:
                    self._safely(partial(self._tick, schedule, now))
                self._sleep()
        finally:
            close_thread_connections()

    def _sleep(self) -> None:
        """Sleep until the next slot (a minute at most), closing the connection on its expiry."""
        soonest = min((slot for slot in self.next_slots.values() if slot), default=None)
        wait = MAX_SLEEP if soonest is None else (soonest - timezone.now()).total_seconds()
        idle_wait(self._poke.wait, min(MAX_SLEEP, max(0.0, wait)), self._poke.is_set)
        self._poke.clear()

    def _safely(self, action: Callable[[], None]) -> None:
        try:
            with request_scope(self._check_idle_after()):
                action()
        except Exception as exc:
            log.warning("scheduler_step_failed", error=str(exc), exc_info=True)
            self._stop.wait(1.0)

    def _declare(self) -> None:
        """Record each schedule as the code declares it (a pause set in the admin stays)."""
        now = timezone.now()
        for schedule in self.schedules:
            self._declare_one(schedule, now)
        log.info(
            "schedules_declared",
            schedules=[s.name for s in self.schedules],
            watching_since=self.watching_since.isoformat(),
        )

    def _declare_one(self, schedule: Schedule, now: datetime) -> bool:
        """Record *schedule*'s row as declared; return True if it had to be created."""
        declared = {
            "task_path": schedule.task_path,
            "expression": schedule.expression,
            "timezone": schedule.zone,
            "catch_up": schedule.catch_up,
            "overlap": schedule.overlap,
            "declared_at": now,
        }
        rows = ScheduleRecord.objects.using(self.database)
        if rows.filter(name=schedule.name).update(**declared):
            return False
        _, created = rows.get_or_create(
            name=schedule.name, defaults={**declared, "next_slot": schedule.next_after(now)}
        )
        return created

    def _tick(self, schedule: Schedule, now: datetime) -> None:
        """Decide *schedule*'s due slots; run them if this daemon's decision is the one taken."""
        database = self.database
        with transaction.atomic(using=database):
            row = (
                ScheduleRecord.objects.using(database)
                .select_for_update()
                .filter(name=schedule.name)
                .first()
            )
            if row is None:
                # Deleted from under us (by hand): declared again, it runs on from now.
                if self._declare_one(schedule, now):
                    log.warning("schedule_declared_again", schedule=schedule.name)
                return
            decision = decide(schedule, row.last_slot, now, self.watching_since)
            following = schedule.next_after(max(now, decision.last_slot or now))
            self.next_slots[schedule.name] = following
            seen = self._seen.get(schedule.name, row.last_slot)
            if row.last_slot is not None and seen is not None and row.last_slot > seen:
                self.decided_elsewhere += 1  # its lock held us until another daemon decided
            self._seen[schedule.name] = row.last_slot
            if decision.last_slot == row.last_slot:
                return
            taken = (
                ScheduleRecord.objects.using(database)
                .filter(name=schedule.name, last_slot=row.last_slot)
                .update(last_slot=decision.last_slot, next_slot=following)
            )
            if not taken:
                return  # another daemon decided these slots
            self._seen[schedule.name] = decision.last_slot
            self.decided += 1
            self._run_slots(schedule, row.enabled, decision)

    def _run_slots(self, schedule: Schedule, enabled: bool, decision: Decision) -> None:
        skipped = decision.skipped
        if not enabled:
            skipped += len(decision.run)
            run: list[datetime] = []
            reason = "paused"
        elif decision.run and not schedule.overlap and _active_run(schedule, self.database):
            skipped += len(decision.run)
            run, reason = [], "the previous run is still queued or running"
        else:
            run, reason = decision.run, "missed while no daemon ran"
        taken = []
        for slot in run:
            try:
                with transaction.atomic(using=self.database):  # a savepoint per slot
                    enqueue_run(schedule, self.database, slot)
            except IntegrityError:
                taken.append(slot)  # it has its run already: pass over it
        if taken:
            log.info(
                "periodic_slot_taken_elsewhere",
                schedule=schedule.name,
                slots=[s.isoformat() for s in taken],
            )
            run = [slot for slot in run if slot not in taken]
        if run:
            transaction.on_commit(lambda: self._wake(schedule.task.queue_name), using=self.database)
            log.info(
                "periodic_runs_enqueued", schedule=schedule.name, slots=[s.isoformat() for s in run]
            )
        if skipped:
            log.warning(
                "periodic_slots_skipped", schedule=schedule.name, skipped=skipped, reason=reason
            )
