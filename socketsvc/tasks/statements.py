"""The task table's hottest statements, compiled by the ORM once and run many times.

Every task is claimed, marked RUNNING and finished: three statements whose
shape never changes, only their values. Building them through the QuerySet
API each time (filters resolved, lookups compiled, the SQL assembled) cost
more CPU than running them, so this module compiles each shape once per
database and fills in the values on each run: the claim's SELECT (written by
Django's compiler for the database's dialect, ``FOR UPDATE SKIP LOCKED``
included) with the current time put where a marker value stood, and single-row
UPDATEs whose values are prepared by the model's own fields
(``get_db_prep_save``), as ``QuerySet.update()`` would prepare them.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.functions import Now

from socketsvc.models import DaemonRecord, TaskRecord, TaskStatus

# A time no caller ever passes: the claim's SQL is compiled with it, then its
# place among the parameters is where each run puts the current time.
_MARKER = datetime(1971, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
_FIELDS = {field.name: field for field in TaskRecord._meta.concrete_fields}
_COLUMNS = {name: str(field.column) for name, field in _FIELDS.items()}


def ready(
    backends: Collection[str], queues: Collection[str] | None, using: str
) -> QuerySet[TaskRecord]:
    """Return the READY tasks of *backends* (and *queues*, None for all)."""
    found = TaskRecord.objects.using(using).filter(
        status=TaskStatus.READY, backend_name__in=backends
    )
    return found if queues is None else found.filter(queue_name__in=queues)


def due_in_order(
    backends: Collection[str], queues: Collection[str] | None, using: str, now: datetime
) -> QuerySet[TaskRecord]:
    """Return the READY tasks due at *now*, the most urgent first."""
    due = ready(backends, queues, using).filter(available_at__lte=now)
    return due.order_by("-priority", "available_at", "enqueued_at")


@functools.lru_cache(maxsize=64)
def _claim_sql(
    using: str, backends: tuple[str, ...], queues: tuple[str, ...] | None, limit: int
) -> tuple[str, tuple[Any, ...], int]:
    connection = connections[using]
    query = due_in_order(backends, queues, using, _MARKER).select_for_update(skip_locked=True)
    sql, params = query[:limit].query.get_compiler(using).as_sql()
    marker = _FIELDS["available_at"].get_db_prep_value(_MARKER, connection)
    places = [n for n, param in enumerate(params) if param == marker]
    if len(places) != 1:  # pragma: no cover - the ORM changed how it compiles the claim
        raise RuntimeError("cannot find the time parameter of the compiled claim")
    return sql, tuple(params), places[0]


def lock_due(
    backends: Collection[str],
    queues: Collection[str] | None,
    using: str,
    now: datetime,
    limit: int,
) -> list[TaskRecord]:
    """Lock up to *limit* due READY tasks, the most urgent first, skipping locked ones.

    Runs ``SELECT … FOR UPDATE SKIP LOCKED``: call it inside a transaction, on
    a database that has it.
    """
    queue_key = None if queues is None else tuple(sorted(queues))
    sql, params, place = _claim_sql(using, tuple(sorted(backends)), queue_key, limit)
    values = list(params)
    values[place] = _FIELDS["available_at"].get_db_prep_value(now, connections[using])
    return list(TaskRecord.objects.db_manager(using).raw(sql, values))


@functools.lru_cache(maxsize=64)
def _update_sql(using: str, assigned: tuple[str, ...], matched: tuple[str, ...]) -> str:
    quote = connections[using].ops.quote_name
    columns = ", ".join(f"{quote(_COLUMNS[name])} = %s" for name in assigned)
    where = " AND ".join(f"{quote(_COLUMNS[name])} = %s" for name in matched)
    # Names come from the model and are quoted; every value is a parameter.
    return f"UPDATE {quote(TaskRecord._meta.db_table)} SET {columns} WHERE {where}"  # noqa: S608


def update_row(using: str, values: Mapping[str, Any], where: Mapping[str, Any]) -> int:
    """Set *values* on the rows matching every *where* equality; return how many changed."""
    connection = connections[using]
    sql = _update_sql(using, tuple(values), tuple(where))
    params = [_FIELDS[name].get_db_prep_save(value, connection) for name, value in values.items()]
    params += [_FIELDS[name].get_db_prep_value(value, connection) for name, value in where.items()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


_WORKER = DaemonRecord._meta.db_table


class DatabaseNow(Now):
    """The database server's time now, in UTC: one clock for every host's leases.

    Django's ``Now()`` is ``CURRENT_TIMESTAMP`` on MySQL, which is in the
    session's time zone and jumps at its daylight saving changes.
    """

    def as_mysql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="UTC_TIMESTAMP(6)", **extra)


def share_registration(using: str, worker_id: str) -> bool:
    """Share-lock *worker_id*'s row, if it is not marked stopped; return whether it is not.

    Inside a claim's transaction: a daemon marking this one stopped must wait
    for the claim to commit (and skips the row meanwhile), and a claim after
    the mark reads it (a locking read sees the latest committed row).
    """
    connection = connections[using]
    quote = connection.ops.quote_name
    share = "FOR SHARE" if connection.vendor == "postgresql" else "LOCK IN SHARE MODE"
    sql = (
        f"SELECT 1 FROM {quote(_WORKER)} WHERE {quote('id')} = %s "  # noqa: S608
        f"AND {quote('stopped_at')} IS NULL {share}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [worker_id])
        return cursor.fetchone() is not None


def take_if_registered(using: str, record_id: str, worker_id: str) -> bool:
    """Mark a READY task RUNNING for *worker_id* if that daemon is not marked stopped (one
    statement: where there is no SKIP LOCKED, the database runs it alone)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    task, worker = quote(TaskRecord._meta.db_table), quote(_WORKER)
    sql = (
        f"UPDATE {task} SET {quote('status')} = %s, {quote('claimed_by')} = %s "  # noqa: S608
        f"WHERE {quote('id')} = %s AND {quote('status')} = %s AND EXISTS ("
        f"SELECT 1 FROM {worker} WHERE {worker}.{quote('id')} = %s "
        f"AND {worker}.{quote('stopped_at')} IS NULL)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [TaskStatus.RUNNING, worker_id, record_id, TaskStatus.READY, worker_id])
        return bool(cursor.rowcount)


def registered(using: str, worker_id: str) -> bool:
    """Return True if *worker_id*'s row exists and is not marked stopped."""
    return DaemonRecord.objects.using(using).filter(id=worker_id, stopped_at__isnull=True).exists()
