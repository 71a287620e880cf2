"""Is a database connection still alive? Checked before each unit of work and before a query
that follows a pause inside one.

Before a unit of work, :mod:`socketsvc.db.lifecycle` checks every reused
connection: one used within the last ``DB_CHECK_AFTER_IDLE`` seconds without a
round trip where the vendor allows it (MySQL: has the server closed the
socket?), any other with a ping.

Inside a unit of work, a handler may compute (or sleep) past the server's
idle timeout between two queries. While a unit of work runs in this thread,
every connection it opens carries a guard that runs where Django runs its own
health check, when a cursor is created: a connection idle for longer than the
threshold is pinged first and replaced if dead, so the query runs on a live
one. A busy connection pays one clock read per cursor. Inside ``atomic`` a
dead connection cannot be replaced (the transaction is gone with it), so the
guard raises :class:`ConnectionLostInTransaction`, which says so.
"""

from __future__ import annotations

import threading
import time
import types
from contextlib import suppress
from typing import Any

from django.db import OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from socketsvc.db.stats import stats
from socketsvc.db.vendors import ops_for

# Attribute set on a DatabaseWrapper: (driver connection, monotonic seconds) of when
# that connection was last known to be in use (a cursor created, or checked alive).
# Keyed by the driver connection, so a connection being opened is never taken
# for an idle one.
LAST_USED = "_socketsvc_last_used"
_GUARDED = "_socketsvc_guarded"
# Inside a handler, a connection is re-checked only after this long at least.
MIN_GUARD_IDLE = 1.0

_local = threading.local()


class ConnectionLostInTransaction(OperationalError):
    """The connection died while an ``atomic`` block sat idle; the transaction is lost."""


def usable(conn: BaseDatabaseWrapper) -> bool:
    """Ping the connection; False if that fails in any way."""
    try:
        return bool(conn.is_usable())
    except Exception:
        return False


def alive(conn: BaseDatabaseWrapper, recent: bool) -> bool:
    """Return True if the open connection *conn* still works.

    A *recent* one is checked without a round trip where the vendor can tell;
    otherwise (or when it cannot) it is pinged.
    """
    closed = ops_for(conn.vendor).closed_by_server(conn) if recent else None
    if closed is None:
        return usable(conn)
    return not closed


def _registry() -> dict[str, BaseDatabaseWrapper]:
    """This thread's connection wrappers that have connected, by alias.

    Django's ``connections.all(initialized_only=True)`` asks an asgiref Local
    for each alias, a lock and a context manager each time: walked twice per
    request it cost more than the rest of the lifecycle. The registry is seeded
    from it once per thread, then kept by ``connection_created`` and
    :func:`discard`.
    """
    wrappers: dict[str, BaseDatabaseWrapper] | None = getattr(_local, "wrappers", None)
    if wrappers is None:
        wrappers = {conn.alias: conn for conn in connections.all(initialized_only=True)}
        _local.wrappers = wrappers
    return wrappers


def thread_connections() -> list[BaseDatabaseWrapper]:
    """Return this thread's wrappers that have connected (open now or not)."""
    return list(_registry().values())


_lost = threading.local()


def note_lost(conn: BaseDatabaseWrapper) -> None:
    """Note that this thread's connection to *conn*'s alias died or could not be trusted:
    the next connect to it is a reconnect (one after an orderly close is not)."""
    lost: set[str] = getattr(_lost, "aliases", set())
    lost.add(conn.alias)
    _lost.aliases = lost


def take_lost(alias: str) -> bool:
    """Return whether this thread's last connection to *alias* was lost (and forget it)."""
    lost: set[str] = getattr(_lost, "aliases", set())
    if alias not in lost:
        return False
    lost.discard(alias)
    return True


def replaced(conn: BaseDatabaseWrapper) -> None:
    """Count a dead connection found and replaced."""
    stats.bump("dead_connections_replaced")
    note_lost(conn)


def discard(conn: BaseDatabaseWrapper) -> None:
    """Throw away a wrapper whose state cannot be trusted; the next access builds a new one."""
    raw = conn.connection
    with suppress(Exception):
        if raw is not None:
            raw.close()
    conn.connection = None
    with suppress(AttributeError):
        del connections[conn.alias]
    wrappers = _registry()
    if wrappers.get(conn.alias) is conn:
        del wrappers[conn.alias]


def close_quietly(conn: BaseDatabaseWrapper) -> None:
    """Close the connection; if even that fails, discard the wrapper."""
    with suppress(Exception):
        conn.close()
    if conn.connection is not None:
        discard(conn)


def touch(conn: BaseDatabaseWrapper, now: float) -> None:
    """Record that *conn*'s driver connection was in use (or known alive) at *now*."""
    setattr(conn, LAST_USED, (conn.connection, now))


def _last_used(conn: BaseDatabaseWrapper) -> float | None:
    record: tuple[Any, float] | None = getattr(conn, LAST_USED, None)
    if record is None or record[0] is not conn.connection:
        return None
    return record[1]


def idle_for(conn: BaseDatabaseWrapper, now: float) -> float:
    """Return how long *conn* has gone unused (infinity if never recorded)."""
    last = _last_used(conn)
    return float("inf") if last is None else now - last


class guarding:
    """Context manager: check idle connections before queries while a unit of work runs here."""

    __slots__ = ("_previous", "_threshold")

    def __init__(self, idle_after: float) -> None:
        self._threshold = max(idle_after, MIN_GUARD_IDLE)
        self._previous: float | None = None

    def __enter__(self) -> None:
        self._previous = getattr(_local, "threshold", None)
        _local.threshold = self._threshold

    def __exit__(self, *exc: object) -> None:
        _local.threshold = self._previous


def _check_before_cursor(conn: BaseDatabaseWrapper) -> None:
    """Replace Django's per-request health check while a socketsvc unit of work runs."""
    threshold: float | None = getattr(_local, "threshold", None)
    if threshold is None:
        type(conn).close_if_health_check_failed(conn)
        return
    now = time.monotonic()
    last = _last_used(conn)
    touch(conn, now)
    # No record for this driver connection: Django is opening it (it checks
    # before it sets autocommit), so it is new, not idle. A ping then would
    # leave a transaction open on PostgreSQL, where autocommit is still off.
    if conn.connection is None or last is None:
        return
    # Autocommit off outside an atomic block: Django is between a transaction's end and
    # turning autocommit back on (or the code manages the transaction itself). A ping
    # would begin a transaction on PostgreSQL, and Django could not turn autocommit on.
    # The time since the last cursor was the last statement's, not idleness, anyway.
    if not conn.autocommit and not conn.in_atomic_block:
        return
    idle = now - last
    if idle < threshold or usable(conn):
        return
    replaced(conn)
    if conn.in_atomic_block:
        with suppress(Exception):
            conn.close()  # Django marks the transaction for rollback
        raise ConnectionLostInTransaction(
            f"the database connection died while a transaction sat idle for {idle:.1f} s; "
            "a transaction cannot continue on a new connection (keep transactions short, "
            "or query within the server's idle timeout)"
        )
    close_quietly(conn)


def guard_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Check a new connection before each query after a pause (``connection_created``)."""
    _registry()[connection.alias] = connection
    if not getattr(connection, _GUARDED, False):
        setattr(connection, _GUARDED, True)
        connection.close_if_health_check_failed = types.MethodType(  # type: ignore[method-assign]
            _check_before_cursor, connection
        )
    touch(connection, time.monotonic())
