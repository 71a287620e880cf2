"""The task table: insert, claim, finish, retry, cancel, progress, recover, prune.

Every change of a task's state is decided by the database, never by one
process believing it is alone: a claim takes a row with ``SELECT … FOR
UPDATE SKIP LOCKED`` where the database has it (PostgreSQL, MySQL 8.0.1+,
MariaDB 10.6+), and otherwise (SQLite) with an update conditional on the row
still being READY; a result is written only while the row is still RUNNING
and claimed by the writer, so a daemon presumed dead cannot overwrite the
run that replaced it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import Count, Q
from django.utils import timezone

from socketsvc.db import vendors
from socketsvc.models import DaemonRecord, LimitRecord, TaskRecord, TaskStatus, WorkflowRecord
from socketsvc.observe import events, tracing
from socketsvc.tasks import statements
from socketsvc.tasks.entries import cancelled_entry, error_entry
from socketsvc.tasks.limits import Controls
from socketsvc.tasks.statements import DatabaseNow
from socketsvc.tasks.workflows import fanin
from socketsvc.tasks.workflows import state as workflow_state

READY, RUNNING = TaskStatus.READY, TaskStatus.RUNNING
# Decides, inside a claim, whether a locked READY task may start (see claim()).
Admit = Callable[[TaskRecord, datetime], Any]
FINISHED = (TaskStatus.SUCCESSFUL, TaskStatus.FAILED)
_PRUNE_BATCH = 1000


def new_id() -> str:
    """Return a fresh task id (32 hex digits)."""
    return uuid.uuid4().hex


def new_record(
    *,
    task_path: str,
    queue_name: str,
    backend_name: str,
    priority: int,
    args: list[Any],
    kwargs: dict[str, Any],
    run_after: datetime | None,
    max_attempts: int,
    now: datetime,
    controls: Controls | None = None,
    schedule: str = "",
    slot: datetime | None = None,
) -> TaskRecord:
    """Return a new READY task's row, not saved (a periodic run names its *schedule*, *slot*)."""
    controls = controls or Controls()
    return TaskRecord(
        id=new_id(),
        task_path=task_path,
        queue_name=queue_name,
        backend_name=backend_name,
        priority=priority,
        args=args,
        kwargs=kwargs,
        run_after=run_after,
        # When it became due: the order among due tasks of one priority is run_after's.
        available_at=run_after if run_after is not None else now,
        enqueued_at=now,
        max_attempts=max_attempts,
        schedule=schedule,
        slot=slot,
        unique_key=controls.unique_key,
        lock_key=controls.lock_key,
        expires_at=controls.expires_at,
        limits=controls.limits,
        trace=tracing.outgoing(),
    )


def insert(record: TaskRecord, using: str) -> TaskRecord:
    """Store a new task's row (raises IntegrityError if its unique key is taken)."""
    record.save(using=using, force_insert=True)
    return record


# The columns of a task's row that differ between the tasks one enqueue_many() makes.
_VARYING = ("id", "args", "kwargs", "available_at", "enqueued_at", "lock_key", "expires_at")
_INSERTED = [
    field for field in TaskRecord._meta.concrete_fields if not getattr(field, "generated", False)
]


def insert_many(common: TaskRecord, rows: list[dict[str, Any]], using: str) -> None:
    """Store the new rows of tasks of one function enqueued together, *batch* to a statement.

    Each of *rows* gives the values that differ between them (``_VARYING``);
    the others are *common*'s, prepared for the database once (the ORM's
    ``bulk_create()`` builds a model per row and prepares every value of every
    row again, which costs more than the INSERTs).
    """
    connection = connections[using]
    prepared = [
        None
        if field.name in _VARYING
        else field.get_db_prep_save(getattr(common, field.attname), connection)
        for field in _INSERTED
    ]
    varying = [(n, field) for n, field in enumerate(_INSERTED) if field.name in _VARYING]
    values = []
    for row in rows:
        value = prepared.copy()
        for n, field in varying:
            value[n] = field.get_db_prep_save(row[field.name], connection)
        values.append(value)
    vendors.ops_for(connection.vendor).insert_rows(
        connection, TaskRecord._meta.db_table, [str(field.column) for field in _INSERTED], values
    )


def active_with_key(
    task_path: str, unique_key: str, using: str, locking: bool = False
) -> TaskRecord | None:
    """Return the READY or RUNNING task of *task_path* holding *unique_key*, if any.

    *locking*: a locking read, which sees the latest committed row even inside a
    transaction whose snapshot was taken before that row was written (MySQL's
    REPEATABLE READ); it waits for a transaction changing the row.
    """
    found = TaskRecord.objects.using(using).filter(
        task_path=task_path, unique_key=unique_key, status__in=(READY, RUNNING)
    )
    if locking:
        with transaction.atomic(using=using):
            return found.select_for_update().first()
    return found.first()


class DeclaredLost(Exception):
    """This daemon's row was marked stopped: another daemon took (or may take) its runs."""


def claim(  # noqa: PLR0917
    worker_id: str,
    backends: Collection[str],
    queues: Collection[str] | None,
    using: str,
    now: datetime | None = None,
    admit: Admit | None = None,
) -> tuple[TaskRecord | None, bool]:
    """Take the most urgent READY task that is due and may start (see :func:`claim_many`)."""
    taken, more = claim_many(worker_id, backends, queues, using, now, admit)
    return (taken[0] if taken else None), more


def claim_many(  # noqa: PLR0917
    worker_id: str,
    backends: Collection[str],
    queues: Collection[str] | None,
    using: str,
    now: datetime | None = None,
    admit: Admit | None = None,
    want: int = 1,
) -> tuple[list[TaskRecord], bool]:
    """Take up to *want* of the most urgent READY tasks that are due and may start, in one
    transaction, marking them RUNNING.

    Returns the tasks taken (in the order they should start) and whether
    another due task was seen, so the caller rouses a second worker only when
    there is work for it. The claim holds only while *worker_id* is not marked
    stopped, decided in the claim's own transaction (a share lock on its row,
    which a daemon marking it stopped must wait for): raises DeclaredLost
    otherwise.

    *admit* (:func:`socketsvc.tasks.daemon.limiting.admit`) decides in the same
    transaction whether a locked task may start (expiry, keys, limits); a task
    it holds back ends the batch (its limit rows are locked: going on to
    another limit's rows could deadlock with another claim), and when nothing
    was taken yet it is passed over and the next one tried.

    *now* (default: the clock's) is the claim's moment, written as each run's
    ``started_at``: a claim whose commit is in doubt is found by it
    (:func:`release_doubtful_claim`). A database without ``SKIP LOCKED``
    (SQLite) takes one task per claim.
    """
    now = now or timezone.now()
    if connections[using].features.has_select_for_update_skip_locked:
        return _claim_skipping_locked(worker_id, backends, queues, using, now, admit, want)
    due = statements.due_in_order(backends, queues, using, now)
    candidates = list(due.values_list("id", flat=True)[:8])
    for n, candidate in enumerate(candidates):
        if _take_one(candidate, worker_id, using, now, admit):
            record = TaskRecord.objects.using(using).get(id=candidate)
            return [record], n + 1 < len(candidates)
    if candidates and not statements.registered(using, worker_id):
        raise DeclaredLost(worker_id)
    return [], False


def _take_one(
    candidate: str, worker_id: str, using: str, now: datetime, admit: Admit | None
) -> bool:
    """Claim *candidate* where there is no SKIP LOCKED (SQLite: one writer at a time, so the
    transaction runs alone); True if it was taken."""
    for _ in range(2):
        missing: set[str] = set()
        with transaction.atomic(using=using):
            found = TaskRecord.objects.using(using).filter(id=candidate, status=READY).first()
            if found is not None and not fanin.may_start(found, using):
                fanin.refuse(found, using)
                return False
            if admit is not None:
                record = found
                verdict = admit(record, now) if record is not None else None
                if verdict is None or not verdict.admitted:
                    missing = set(verdict.missing) if verdict is not None else set()
                    if not missing:
                        return False
            if not missing and statements.take_if_registered(using, candidate, worker_id):
                record = TaskRecord.objects.using(using).get(id=candidate)
                _mark_running(record, worker_id, now, using)
                return True
        if not missing:
            return False
        ensure_limit_rows(missing, using)
    return False


# A claim looks at this many locked candidates at a time, for at most this many rounds (each
# its own short transaction) while limits hold them back.
_CLAIM_BATCH, _CLAIM_ROUNDS = 2, 8


def _claim_skipping_locked(  # noqa: PLR0917
    worker_id: str,
    backends: Collection[str],
    queues: Collection[str] | None,
    using: str,
    now: datetime,
    admit: Admit | None,
    want: int,
) -> tuple[list[TaskRecord], bool]:
    for _ in range(_CLAIM_ROUNDS):
        missing: set[str] = set()
        taken: list[TaskRecord] = []
        with transaction.atomic(using=using):
            if not statements.share_registration(using, worker_id):
                raise DeclaredLost(worker_id)
            found = statements.lock_due(
                backends, queues, using, now, limit=max(_CLAIM_BATCH, want + 1)
            )
            if not found:
                return [], False
            for n, record in enumerate(found):
                if not fanin.may_start(record, using):
                    fanin.refuse(record, using)
                    return taken, True
                verdict = admit(record, now) if admit is not None else None
                if verdict is None or verdict.admitted:
                    _mark_running(record, worker_id, now, using)
                    taken.append(record)
                    if len(taken) == want:
                        return taken, n + 1 < len(found)
                    continue
                missing |= verdict.missing
                # The limit rows of the task held back are locked now: a claim that went on
                # to the next task's (another limit's rows) could take two limits' rows in
                # the opposite order of another claim, and deadlock. The next round does.
                break
            if taken:
                return taken, len(found) > len(taken)
        if missing:
            ensure_limit_rows(missing, using)
    return [], True


def ensure_limit_rows(keys: Collection[str], using: str) -> None:
    """Create the limit rows *keys* in a transaction of their own, never inside a claim's: on
    MySQL an insert that finds the row takes a shared lock, which a claim's exclusive one
    would deadlock with."""
    now = timezone.now()
    with transaction.atomic(using=using):
        LimitRecord.objects.using(using).bulk_create(
            [LimitRecord(key=key, updated_at=now) for key in sorted(keys)], ignore_conflicts=True
        )


def _mark_running(record: TaskRecord, worker_id: str, now: datetime, using: str) -> None:
    record.status = RUNNING
    record.claimed_by = worker_id
    record.claims += 1
    record.started_at = record.last_attempted_at = now
    record.worker_ids = [*record.worker_ids, worker_id]
    record.waiting = ""
    statements.update_row(
        using,
        {
            "status": RUNNING,
            "claimed_by": worker_id,
            "claims": record.claims,
            "started_at": now,
            "last_attempted_at": now,
            "worker_ids": record.worker_ids,
            "waiting": "",
        },
        {"id": record.id},
    )


def _fence(record: TaskRecord, worker_id: str) -> dict[str, Any]:
    """Return the conditions of a write about *record*'s run: still RUNNING under our claim."""
    return {"id": record.id, "status": RUNNING, "claimed_by": worker_id, "claims": record.claims}


def next_due(
    backends: Collection[str], queues: Collection[str] | None, using: str
) -> datetime | None:
    """Return when the next READY task becomes due (None if there is none)."""
    first = statements.ready(backends, queues, using).order_by("available_at").first()
    return None if first is None else first.available_at


def finish(
    record: TaskRecord,
    worker_id: str,
    *,
    status: str,
    using: str,
    return_value: Any = None,
    error: dict[str, str] | None = None,
    retry_at: datetime | None = None,
) -> TaskRecord | None:
    """Record how a run ended (or schedule the next one); None if the run was taken from us.

    A success is one conditional UPDATE; a failure appends to the row's errors,
    which takes the row's lock first.
    """
    ours = _fence(record, worker_id)
    if error is None and retry_at is None:
        now = timezone.now()
        with transaction.atomic(using=using):
            done = statements.update_row(
                using,
                {
                    "status": status,
                    "finished_at": now,
                    "return_value": return_value,
                    "claimed_by": "",
                },
                ours,
            )
            if done and record.workflow_id and status == TaskStatus.SUCCESSFUL:
                # Its workflow moves on in the same transaction: recorded once, moved on once.
                record.return_value = return_value
                fanin.succeeded(record, using)
        if not done:
            return None
        record.status, record.finished_at, record.return_value = status, now, return_value
        record.claimed_by = ""
        return record
    with transaction.atomic(using=using):
        locked = TaskRecord.objects.using(using).select_for_update().filter(**ours).first()
        if locked is None:
            return None
        if error is not None:
            locked.errors = [*locked.errors, error]
        locked.claimed_by = ""
        if retry_at is not None and locked.cancel_requested_at is not None:
            # Cancelled while it ran: whatever it raised, it never starts again.
            locked.errors = [*locked.errors, cancelled_entry("while it ran; not retried")]
            retry_at, status = None, TaskStatus.FAILED
        if retry_at is not None:
            locked.status = READY
            locked.available_at = retry_at
        else:
            locked.status = status
            locked.finished_at = timezone.now()
            locked.return_value = return_value
        locked.save(
            update_fields=[
                "errors",
                "claimed_by",
                "status",
                "available_at",
                "finished_at",
                "return_value",
            ]
        )
        if locked.status == TaskStatus.FAILED:
            fanin.failed(locked, using)
        return locked


def put_back(
    record: TaskRecord, worker_id: str, retry_at: datetime, using: str
) -> TaskRecord | None:
    """Return a run that never started to READY, its attempt not counted; None if not ours.

    A task cancelled meanwhile ends FAILED instead: it never starts.
    """
    with transaction.atomic(using=using):
        ours = _fence(record, worker_id)
        locked = TaskRecord.objects.using(using).select_for_update().filter(**ours).first()
        if locked is None:
            return None
        locked.worker_ids = locked.worker_ids[:-1]
        locked.claimed_by = ""
        if locked.cancel_requested_at is not None:
            locked.status, locked.finished_at = TaskStatus.FAILED, timezone.now()
            locked.errors = [*locked.errors, cancelled_entry("before it started")]
        else:
            locked.status, locked.available_at = READY, retry_at
        locked.save(
            update_fields=[
                "worker_ids",
                "claimed_by",
                "status",
                "finished_at",
                "errors",
                "available_at",
            ]
        )
        if locked.status == TaskStatus.FAILED:
            fanin.failed(locked, using)
        return locked


def request_cancel(record_id: str, reason: dict[str, str], using: str) -> TaskRecord:
    """Ask for a task to stop: a READY one fails at once, a RUNNING one is flagged.

    Raises TaskRecord.DoesNotExist.
    """
    with transaction.atomic(using=using):
        step = TaskRecord.objects.using(using).filter(id=record_id).values("workflow_id", "status")
        found = step.first()
        if found is not None and found["workflow_id"] and found["status"] == TaskStatus.WAITING:
            # A WAITING step's row is taken after its workflow's, as a failure taking the
            # workflow's row then its WAITING steps' does (the other order deadlocks).
            fanin.lock_workflow(found["workflow_id"], using)
        record = TaskRecord.objects.using(using).select_for_update().get(id=record_id)
        if record.status in FINISHED:
            return record
        now = timezone.now()
        record.cancel_requested_at = now
        if record.status in (READY, TaskStatus.WAITING):
            record.status = TaskStatus.FAILED
            record.finished_at = now
            record.errors = [*record.errors, reason]
        record.save(update_fields=["cancel_requested_at", "status", "finished_at", "errors"])
        if record.status == TaskStatus.FAILED:
            fanin.failed(record, using)
        return record


def write_progress(  # noqa: PLR0917
    record_id: str,
    fence: tuple[str, int],
    done: int,
    total: int | None,
    note: str,
    using: str,
) -> bool:
    """Store a running task's progress under its claim (*fence*: claimed_by, claims); False if
    it was cancelled, or the claim is no longer this run's."""
    claimed_by, claims = fence
    return bool(
        TaskRecord.objects.using(using)
        .filter(
            id=record_id,
            status=RUNNING,
            claimed_by=claimed_by,
            claims=claims,
            cancel_requested_at__isnull=True,
        )
        .update(
            progress_done=done,
            progress_total=total,
            progress_note=note[:255],
            progress_at=timezone.now(),
        )
    )


def cancel_requested(record_ids: Iterable[str], using: str) -> set[str]:
    """Return which of *record_ids* were asked to stop."""
    return set(
        TaskRecord.objects.using(using)
        .filter(id__in=list(record_ids), cancel_requested_at__isnull=False)
        .values_list("id", flat=True)
    )


def lost(worker_ids: Collection[str], reason: dict[str, str], using: str) -> tuple[int, int]:
    """Requeue (or fail, without attempts left) the RUNNING tasks of gone workers."""
    requeued = failed = 0
    candidates = TaskRecord.objects.using(using).filter(status=RUNNING, claimed_by__in=worker_ids)
    for record_id in list(candidates.values_list("id", flat=True)):
        with transaction.atomic(using=using):
            record = (
                TaskRecord.objects.using(using)
                .select_for_update()
                .filter(id=record_id, status=RUNNING, claimed_by__in=worker_ids)
                .first()
            )
            if record is None:
                continue
            if _take_back(record, reason, using) == READY:
                requeued += 1
            else:
                failed += 1
    return requeued, failed


def _take_back(record: TaskRecord, reason: dict[str, str], using: str) -> str:
    """Requeue a locked run that was lost (its attempt counted) or fail it; return the status.

    A run lost after its hard time limit passed was stopped for it (its process
    ended, see ``@limits``), and a run cancelled meanwhile was stopped by its
    cancel: its error says so.
    """
    hard = (record.limits or {}).get("hard_timeout")
    started = record.started_at
    limit = timedelta(seconds=float(hard)) if hard is not None else None
    if limit is not None and started is not None and started + limit <= timezone.now():
        reason = error_entry(
            "socketsvc.tasks.TimeLimitExceeded",
            f"socketsvc.tasks.TimeLimitExceeded: the run went past its hard limit "
            f"({limit.total_seconds():g} s) and its process was ended (it held the interpreter, or "
            "died on its own past the limit)\n",
        )
    if record.cancel_requested_at is not None:
        reason = cancelled_entry("while it ran; its process ended before the run did")
    record.errors = [*record.errors, reason]
    record.claimed_by = ""
    if record.attempts < record.max_attempts and record.cancel_requested_at is None:
        # It keeps its place (its available_at): the first in line for a worker.
        record.status = READY
    else:
        record.status, record.finished_at = TaskStatus.FAILED, timezone.now()
    record.save(update_fields=["errors", "claimed_by", "status", "available_at", "finished_at"])
    if record.status == TaskStatus.FAILED:
        fanin.failed(record, using)
    transaction.on_commit(
        functools.partial(
            _counted_lost,
            record.task_path,
            record.queue_name,
            str(record.status),
            reason["exception_class_path"],
        ),
        using=using,
    )
    return str(record.status)


def _counted_lost(task: str, queue: str, status: str, error: str) -> None:
    events.runs_lost(queue, 1)
    if status == TaskStatus.FAILED:
        events.task_finished_elsewhere(task, queue, ending_of(error))


def ending_of(error_class: str) -> str:
    """Return how a run ended, as the metrics say it, from its error's class."""
    if error_class.endswith(".Cancelled"):
        return "cancelled"
    if error_class.endswith(".TimeLimitExceeded"):
        return "time_limit"
    return "failed"


def abandon(record: TaskRecord, worker_id: str, reason: dict[str, str], using: str) -> str | None:
    """Take back a run of ours whose ending could not be recorded, as a lost run is.

    Returns the status it got (READY or FAILED), or None if the run was no
    longer ours (finished, or taken back already).
    """
    with transaction.atomic(using=using):
        locked = (
            TaskRecord.objects.using(using)
            .select_for_update()
            .filter(**_fence(record, worker_id))
            .first()
        )
        return None if locked is None else _take_back(locked, reason, using)


def release_doubtful_claim(worker_id: str, claimed_at: datetime, using: str) -> list[TaskRecord]:
    """Put back the tasks a claim of *worker_id* at *claimed_at* took, if it took any.

    For a claim whose commit is in doubt (the connection broke as it was
    sent): their runs never started, so the attempts are not counted and the
    tasks keep their places. Returns the tasks put back (none if the claim took
    none).
    """
    records = TaskRecord.objects.using(using).filter(
        status=RUNNING, claimed_by=worker_id, started_at=claimed_at
    )
    put = [put_back(record, worker_id, record.available_at, using) for record in records]
    return [record for record in put if record is not None]


def prune(older_than: timedelta, using: str, dry_run: bool = False) -> int:
    """Delete finished tasks that ended more than *older_than* ago; return how many.

    A workflow's steps go only with their workflow: once it finished that long
    ago and none of its steps is left to run (see :func:`workflows.state.prunable`).
    """
    cutoff = timezone.now() - older_than
    old = TaskRecord.objects.using(using).filter(
        status__in=FINISHED, finished_at__lt=cutoff, workflow_id__isnull=True
    )
    if dry_run:
        return old.count() + sum(
            TaskRecord.objects.using(using).filter(workflow_id__in=batch).count()
            for batch in workflow_state.prunable(cutoff, using, _PRUNE_BATCH)
        )
    deleted = 0
    while batch := list(old.values_list("id", flat=True)[:_PRUNE_BATCH]):
        deleted += TaskRecord.objects.using(using).filter(id__in=batch).delete()[0]
    for batch in workflow_state.prunable(cutoff, using, _PRUNE_BATCH):
        with transaction.atomic(using=using):
            deleted += TaskRecord.objects.using(using).filter(workflow_id__in=batch).delete()[0]
            WorkflowRecord.objects.using(using).filter(id__in=batch).delete()
    return deleted


def counts(using: str) -> dict[str, int]:
    """Return how many tasks are in each status."""
    rows = TaskRecord.objects.using(using).values("status").annotate(n=Count("id"))
    found = {row["status"]: row["n"] for row in rows}
    return {status.value: found.get(status.value, 0) for status in TaskStatus}


# -- the daemons that run tasks -------------------------------------------------


def register_worker(record: DaemonRecord, lease: float, using: str) -> None:
    """Record a daemon that starts running tasks, its lease running from now (the database's)."""
    record.save(using=using, force_insert=True)
    renew(record.id, lease, using)


def renew(worker_id: str, lease: float, using: str) -> bool:
    """Renew a daemon's lease by the database's clock; False if it was marked stopped."""
    return bool(
        DaemonRecord.objects.using(using)
        .filter(id=worker_id, stopped_at__isnull=True)
        .update(
            heartbeat_at=DatabaseNow(),
            lease_expires_at=DatabaseNow() + timedelta(seconds=lease),
        )
    )


def stop_worker(worker_id: str, using: str) -> None:
    """Record that a daemon stopped; whatever it still had RUNNING is lost."""
    DaemonRecord.objects.using(using).filter(id=worker_id).update(stopped_at=timezone.now())


def workers_gone(own_id: str, using: str) -> list[DaemonRecord]:
    """Return the daemons that stopped or whose lease expired (by the database's clock)."""
    query = Q(stopped_at__isnull=False) | Q(lease_expires_at__lt=DatabaseNow())
    return list(DaemonRecord.objects.using(using).exclude(id=own_id).filter(query))


def mark_stopped(worker_ids: Collection[str], using: str) -> set[str]:
    """Mark gone daemons stopped; return those now marked (a row a claim holds is skipped).

    A claim takes a share lock on its daemon's row, so a row locked now is a
    claim in flight: it is left for the next round, and a claim that comes
    after the mark sees it and is refused. Rows marked earlier count as marked.
    """
    rows = DaemonRecord.objects.using(using).filter(id__in=list(worker_ids))
    if not connections[using].features.has_select_for_update_skip_locked:
        rows.filter(stopped_at__isnull=True).update(stopped_at=timezone.now())
        return set(rows.values_list("id", flat=True))
    with transaction.atomic(using=using):
        free = set(rows.select_for_update(skip_locked=True).values_list("id", flat=True))
        rows.filter(id__in=free, stopped_at__isnull=True).update(stopped_at=timezone.now())
    return free


def workers_running(own_id: str, using: str) -> list[DaemonRecord]:
    """Return the other daemons not recorded as stopped."""
    return list(
        DaemonRecord.objects.using(using).exclude(id=own_id).filter(stopped_at__isnull=True)
    )


def orphan_claims(using: str) -> set[str]:
    """Return worker ids that RUNNING tasks name but no worker row has (a pruned row)."""
    claimed = set(
        TaskRecord.objects.using(using)
        .filter(status=RUNNING)
        .values_list("claimed_by", flat=True)
        .distinct()
    )
    known = set(
        DaemonRecord.objects.using(using).filter(id__in=claimed).values_list("id", flat=True)
    )
    return claimed - known


def forget_workers(older_than: timedelta, using: str) -> None:
    """Delete the rows of workers stopped long ago (and no longer named by a RUNNING task)."""
    now = timezone.now()
    busy = TaskRecord.objects.using(using).filter(status=RUNNING).values("claimed_by")
    DaemonRecord.objects.using(using).filter(stopped_at__lt=now - older_than).exclude(
        id__in=busy
    ).delete()
