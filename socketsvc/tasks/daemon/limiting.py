"""Whether a claimed task may start now: expiry, lock keys, concurrency and rate limits.

Decided in the claim's own transaction, for every daemon on every host at once:
each limit is a row of ``socketsvc_limit`` that the claim locks (``SELECT … FOR
UPDATE``, in key order) before it counts what runs. Two claims needing the same
limit take turns, and the second sees what the first started (every statement
reads the latest committed rows: READ COMMITTED on MySQL, as Django sets it, and
PostgreSQL's default). Counting RUNNING rows, not a counter, means nothing needs
putting right after a crash: a run of a dead daemon counts until it is taken back.

* **lock key**: a task starts only while no task with its key runs and none
  with its key enqueued before it is still READY (a queue per key, in order);
* **concurrency**: fewer RUNNING tasks of the function (or the queue) than the limit;
* **rate**: fewer starts than the limit in the window before now. The row keeps
  the latest *count* start times: that alone decides exactly (an older start
  cannot matter once *count* later ones are kept).

A task held back is *parked*, not failed: it stays READY, says why in
``waiting``, and becomes due again when the window allows (rate) or when a
run holding the limit ends (concurrency, lock: :func:`released` wakes the
next), with a recheck after ``PARK_RECHECK`` in case that wake was lost. The
other due tasks held back by the same limit are parked with it in one
statement, so a claim does not look at each of them in turn (for a lock key:
those enqueued after it). A claim takes the limit rows of one task only, in
key order, then ends its transaction: two claims never hold two limits' rows
in opposite orders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from django.db import connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from socketsvc.models import LimitRecord, TaskRecord, TaskStatus
from socketsvc.tasks import entries
from socketsvc.tasks.limits import QueueLimits
from socketsvc.tasks.workflows import fanin

log = structlog.get_logger(__name__)

# A task held back by a concurrency limit or a lock key is looked at again this much later
# even if no run's end woke it (a daemon that died while running one).
PARK_RECHECK = 30.0
# How many due tasks held back by the same limit one statement parks.
PARK_BATCH = 500
_KEY_LENGTH = 255

EXPIRED = "expired"


@dataclass
class Verdict:
    """Whether a task may start; if not, the limit rows that must exist first."""

    admitted: bool
    missing: set[str] = field(default_factory=set)


ADMITTED = Verdict(True)
HELD = Verdict(False)


def row_key(kind: str, name: str) -> str:
    """Return the limit row's key for *name* of *kind* ("task", "queue", "lock")."""
    key = f"{kind}:{name}"
    if len(key) <= _KEY_LENGTH:
        return key
    return f"{kind}#{hashlib.sha256(name.encode()).hexdigest()}"


@dataclass(frozen=True)
class _Need:
    key: str
    reason: str  # what `waiting` says when it holds the task back
    same: Q  # the tasks held back by the same limit
    concurrency: int | None = None
    rate: tuple[int, float] | None = None
    lock: bool = False


def needs(record: TaskRecord, queues: Mapping[str, QueueLimits]) -> list[_Need]:
    """Return the limits *record* starts under, in the order their rows are locked."""
    found: list[_Need] = []
    limits = record.limits or {}
    concurrency, rate = limits.get("concurrency"), limits.get("rate")
    if concurrency is not None or rate is not None:
        found.append(
            _Need(
                row_key("task", record.task_path),
                "rate" if concurrency is None else "concurrency",
                Q(task_path=record.task_path),
                concurrency,
                (int(rate[0]), float(rate[1])) if rate is not None else None,
            )
        )
    queue = queues.get(record.queue_name)
    if queue is not None and (queue.concurrency is not None or queue.rate is not None):
        found.append(
            _Need(
                row_key("queue", record.queue_name),
                "queue rate" if queue.concurrency is None else "queue concurrency",
                Q(queue_name=record.queue_name),
                queue.concurrency,
                (queue.rate.count, queue.rate.period) if queue.rate is not None else None,
            )
        )
    if record.lock_key:
        found.append(
            _Need(row_key("lock", record.lock_key), "lock", Q(lock_key=record.lock_key), lock=True)
        )
    return sorted(found, key=lambda need: need.key)


def admit(
    record: TaskRecord, now: datetime, using: str, queues: Mapping[str, QueueLimits]
) -> Verdict:
    """Decide whether the locked READY *record* may start now (inside the claim's transaction).

    An expired task is failed here and never starts; a task held back is
    parked (see the module docstring). Returns ADMITTED, HELD, or the limit
    rows to create before the claim is tried again.
    """
    if record.expires_at is not None and record.expires_at <= now:
        _expire(record, now, using)
        return HELD
    wanted = needs(record, queues)
    if not wanted:
        return ADMITTED
    rows = _lock_rows([need.key for need in wanted], using)
    missing = {need.key for need in wanted} - set(rows)
    if missing:
        return Verdict(False, missing)
    stamp = now.timestamp()
    for need in wanted:
        held = _held_until(need, record, rows[need.key], stamp, using)
        if held is not None:
            _park(record, need, *held, now, using)
            return HELD
    for need in wanted:
        if need.rate is not None:
            row = rows[need.key]
            count = need.rate[0]
            row.starts = sorted([*(float(s) for s in row.starts), stamp])[-count:]
            row.updated_at = now
            row.save(using=using, update_fields=["starts", "updated_at"])
    return ADMITTED


def _lock_rows(keys: list[str], using: str) -> dict[str, LimitRecord]:
    rows = LimitRecord.objects.using(using).select_for_update().filter(key__in=keys).order_by("key")
    return {row.key: row for row in rows}


def _held_until(
    need: _Need, record: TaskRecord, row: LimitRecord, stamp: float, using: str
) -> tuple[float, str] | None:
    """Return when *record* may next try under *need* (epoch seconds) and why, or None if it
    may start."""
    tasks = TaskRecord.objects.using(using)
    if need.lock:
        ahead = Q(status=TaskStatus.RUNNING) | Q(
            Q(enqueued_at__lt=record.enqueued_at)
            | Q(enqueued_at=record.enqueued_at, id__lt=record.id),
            status=TaskStatus.READY,
        )
        if tasks.filter(need.same, ahead).exclude(id=record.id).exists():
            return stamp + PARK_RECHECK, need.reason
    if need.concurrency is not None:
        running = tasks.filter(need.same, status=TaskStatus.RUNNING).count()
        if running >= need.concurrency:
            return stamp + PARK_RECHECK, need.reason
    if need.rate is not None:
        count, period = need.rate
        starts = sorted(float(s) for s in row.starts)[-count:]
        if len(starts) >= count and starts[0] > stamp - period:
            return starts[0] + period, need.reason.replace("concurrency", "rate")
    return None


def _park(  # noqa: PLR0917
    record: TaskRecord, need: _Need, until: float, reason: str, now: datetime, using: str
) -> None:
    """Hold *record* back until *until*, with the due tasks held back by the same limit."""
    at = datetime.fromtimestamp(until, tz=UTC)
    ids = [record.id]
    if connections[using].features.has_select_for_update_skip_locked:
        same = _due(using, now).filter(need.same).exclude(id=record.id)
        if need.lock:  # those of the key enqueued after it wait behind it
            same = same.filter(
                Q(enqueued_at__gt=record.enqueued_at)
                | Q(enqueued_at=record.enqueued_at, id__gt=record.id)
            )
        ids += list(
            same.select_for_update(skip_locked=True).values_list("id", flat=True)[:PARK_BATCH]
        )
    TaskRecord.objects.using(using).filter(id__in=ids, status=TaskStatus.READY).update(
        available_at=at, waiting=reason
    )
    record.available_at, record.waiting = at, reason


def _due(using: str, now: datetime) -> QuerySet[TaskRecord]:
    return TaskRecord.objects.using(using).filter(status=TaskStatus.READY, available_at__lte=now)


def _expire(record: TaskRecord, now: datetime, using: str) -> None:
    reason = entries.error_entry(
        "socketsvc.tasks.TaskExpired",
        f"socketsvc.tasks.TaskExpired: not started before it expired at "
        f"{record.expires_at:%Y-%m-%d %H:%M:%S} UTC; it never ran\n",
    )
    record.status, record.finished_at = TaskStatus.FAILED, now
    record.errors = [*record.errors, reason]
    record.waiting = ""
    record.save(using=using, update_fields=["status", "finished_at", "errors", "waiting"])
    fanin.failed(record, using)
    log.warning("task_expired", task_id=record.id, task=record.task_path)


def expire_due(now: datetime, using: str) -> int:
    """Fail the READY tasks that expired before any claim reached them; return how many."""
    expired = 0
    with transaction.atomic(using=using):
        found = TaskRecord.objects.using(using).filter(status=TaskStatus.READY, expires_at__lte=now)
        if connections[using].features.has_select_for_update_skip_locked:
            found = found.select_for_update(skip_locked=True)
        for record in found[:PARK_BATCH]:
            _expire(record, now, using)
            expired += 1
    return expired


def released(record: TaskRecord, using: str, queues: Mapping[str, QueueLimits]) -> bool:
    """A run of *record* ended: wake the next task parked on a limit it held.

    Takes each limit's row first, so a claim that parks a task because of this
    run either saw the run end or parked before this looks (never in between).
    The parked task is found by a plain read and changed by a conditional
    update, not locked with SKIP LOCKED: a claim scanning past parked rows
    holds each for an instant, and skipping it would lose the wake. One parked
    but due already is being looked at by a claim: nothing to wake then.
    Returns True if a task was woken.
    """
    held = [need for need in needs(record, queues) if need.lock or need.concurrency is not None]
    if not held:
        return False
    woken = False
    with transaction.atomic(using=using):
        _lock_rows([need.key for need in held], using)
        now = timezone.now()
        for need in held:
            tasks = TaskRecord.objects.using(using)
            first = (
                tasks.filter(need.same, status=TaskStatus.READY, waiting=need.reason)
                .exclude(id=record.id)
                .order_by("enqueued_at", "id")
                .values_list("id", "available_at")
                .first()
            )
            if first is None or first[1] <= now:
                continue
            # Only while it is not due yet: one that became due meanwhile may be locked by a
            # claim waiting for this limit's row, and (READ COMMITTED reading the committed
            # row for an UPDATE's WHERE) a row that does not match is passed, not waited for.
            woken |= bool(
                tasks.filter(
                    id=first[0], status=TaskStatus.READY, waiting=need.reason, available_at__gt=now
                ).update(available_at=now, waiting="")
            )
    return woken


def prune(older_than: timedelta, using: str) -> int:
    """Delete limit rows unused for *older_than* (a row is made again when needed)."""
    cutoff = timezone.now() - older_than
    return LimitRecord.objects.using(using).filter(updated_at__lt=cutoff).delete()[0]
