"""The database and cache lifecycle around one unit of work, in the thread that runs it.

Django recycles connections only around HTTP requests (``request_started`` and
``request_finished`` call ``close_old_connections()``). A long-running process
never sends those signals, so after MySQL's ``wait_timeout`` its connection is
dead and the next query raises ``OperationalError(2006)``. :func:`request_scope`
does what Django does around an HTTP request, plus what Django leaves open:

* before: for each of this thread's connections that is not inside an outer
  ``atomic`` block, drop it if unusable or past ``CONN_MAX_AGE``, and check it
  is alive whatever ``CONN_HEALTH_CHECKS`` says, replacing it if dead: a MySQL
  connection used in the last ``check_idle_after`` seconds without a round
  trip (has the server closed it?), any other with a ping; reset the query log.
* the work runs; an exception that is not a database error (a timeout, a
  signal, a bug) marks the connections suspect so they are pinged afterwards.
* after: roll back any ``atomic`` block the work left open, roll back and
  restore autocommit if the work switched it off, then the same guarded close;
  close caches.

Nothing here ever raises out: a driver connection broken behind Django's back
is discarded, and the next unit of work gets a fresh one. It is usable on its
own by anyone writing a long-running loop::

    from socketsvc.lifecycle import request_scope

    while True:
        job = queue.get()
        with request_scope():
            job.run()
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import structlog
from django.core.cache import close_caches
from django.db import DatabaseError, connections, reset_queries
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

log = structlog.get_logger("socketsvc.lifecycle")

# Attribute set on a DatabaseWrapper: when the last unit of work that could have
# used its connection started (monotonic seconds).
_LAST_USED = "_socketsvc_last_used"
_CONNECTED_BEFORE = "_socketsvc_connected_before"


@dataclass
class LifecycleStats:
    """Process-wide counters, read by ``rpc.status``."""

    connects: int = 0
    reconnects: int = 0
    discarded: int = 0
    dead_connections_replaced: int = 0
    leaked_atomic_rolled_back: int = 0
    autocommit_restored: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def bump(self, field: str) -> None:
        """Increment one counter."""
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)

    def snapshot(self) -> dict[str, int]:
        """Return the counters as a dict."""
        with self._lock:
            return {
                "db_connects": self.connects,
                "db_reconnects": self.reconnects,
                "db_connections_discarded": self.discarded,
                "dead_connections_replaced": self.dead_connections_replaced,
                "leaked_atomic_rolled_back": self.leaked_atomic_rolled_back,
                "autocommit_restored": self.autocommit_restored,
            }


stats = LifecycleStats()
_local = threading.local()


def _on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    stats.bump("connects")
    _local.connects = getattr(_local, "connects", 0) + 1
    if getattr(connection, _CONNECTED_BEFORE, False):
        stats.bump("reconnects")
        _local.reconnects = getattr(_local, "reconnects", 0) + 1
    setattr(connection, _CONNECTED_BEFORE, True)


connection_created.connect(_on_connection_created, dispatch_uid="socketsvc.lifecycle")


def thread_connects() -> tuple[int, int]:
    """Return (connections opened, of which reconnects) by this thread, for per-request logs."""
    return int(getattr(_local, "connects", 0)), int(getattr(_local, "reconnects", 0))


def _discard(conn: BaseDatabaseWrapper) -> None:
    """Throw away a wrapper whose state cannot be trusted; the next access builds a new one."""
    stats.bump("discarded")
    raw = conn.connection
    with suppress(Exception):
        if raw is not None:
            raw.close()
    conn.connection = None
    with suppress(AttributeError):
        del connections[conn.alias]


def _close_quietly(conn: BaseDatabaseWrapper) -> None:
    """Close the connection; if even that fails, discard the wrapper."""
    with suppress(Exception):
        conn.close()
    if conn.connection is not None:
        _discard(conn)


def _close_if_stale(conn: BaseDatabaseWrapper) -> None:
    """Close the connection if unusable or too old; never raise."""
    try:
        conn.close_if_unusable_or_obsolete()
    except Exception as exc:
        # E.g. the raw driver connection was closed behind Django's back:
        # Django's close() then raises, after forgetting the connection.
        log.warning("db_connection_close_failed", alias=conn.alias, error=repr(exc))
        if conn.connection is not None:
            _discard(conn)


def _usable(conn: BaseDatabaseWrapper) -> bool:
    try:
        return bool(conn.is_usable())
    except Exception:
        return False


def _server_closed(conn: BaseDatabaseWrapper) -> bool | None:
    """Tell without a round trip whether the server has closed an idle MySQL connection.

    An idle connection has nothing to read: readable means the server closed it
    (KILL, wait_timeout, restart) or sent an error before doing so. None when
    this cannot be told cheaply (another database, no file descriptor).
    """
    fileno = getattr(conn.connection, "fileno", None)
    if conn.vendor != "mysql" or fileno is None:
        return None
    try:
        poller = select.poll()
        poller.register(fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError, TypeError):
        return None
    except Exception:
        return True  # the driver refused to give its descriptor: it is closed


def _prepare(conn: BaseDatabaseWrapper, now: float, check_idle_after: float) -> None:
    if conn.in_atomic_block:
        # An outer transaction (a caller's, or a test's) owns this connection.
        return
    _close_if_stale(conn)
    if conn.connection is None:
        return
    # Every reused connection is checked here, guarded, rather than by Django's
    # lazy health check at the first cursor (which raises out of the handler
    # when the driver connection was closed behind Django's back). One used
    # recently is checked without a round trip; an older one, whose server or
    # network may have dropped it silently, is pinged.
    recent = now - getattr(conn, _LAST_USED, 0.0) < check_idle_after
    closed = _server_closed(conn) if recent else None
    if closed is None:
        closed = not _usable(conn)
    if closed:
        stats.bump("dead_connections_replaced")
        _close_quietly(conn)
        return
    # Django's own health check would ping again at the first cursor.
    setattr(conn, "health_check_done", True)  # noqa: B010


def _unwind_atomic(conn: BaseDatabaseWrapper, depth: int) -> bool:
    """Roll back atomic blocks opened above *depth*; return False if the wrapper was discarded."""
    leaked = len(conn.atomic_blocks) - depth
    if leaked <= 0:
        return True
    log.warning("leaked_atomic_block_rolled_back", alias=conn.alias, blocks=leaked)
    stats.bump("leaked_atomic_rolled_back")
    error = RuntimeError("socketsvc: atomic block left open by a handler")
    while len(conn.atomic_blocks) > depth:
        try:
            conn.atomic_blocks[-1].__exit__(RuntimeError, error, None)
        except Exception as exc:
            log.warning("leaked_atomic_rollback_failed", alias=conn.alias, error=repr(exc))
            _discard(conn)
            return False
    return True


def _restore_autocommit(conn: BaseDatabaseWrapper) -> bool:
    """Roll back and re-enable autocommit if the work left it off; False if discarded."""
    if conn.connection is None or conn.autocommit == conn.settings_dict["AUTOCOMMIT"]:
        return True
    log.warning(
        "autocommit_left_off_rolled_back",
        alias=conn.alias,
        hint="call transaction.commit() before returning, or use transaction.atomic()",
    )
    stats.bump("autocommit_restored")
    try:
        conn.rollback()
        conn.set_autocommit(conn.settings_dict["AUTOCOMMIT"])
    except Exception as exc:
        log.warning("autocommit_restore_failed", alias=conn.alias, error=repr(exc))
        _discard(conn)
        return False
    return True


def _finish(conn: BaseDatabaseWrapper, depth: int, started: float, suspect: bool) -> None:
    if not _unwind_atomic(conn, depth):
        return
    if conn.in_atomic_block:
        return
    if not _restore_autocommit(conn):
        return
    if suspect and conn.connection is not None:
        conn.errors_occurred = True
    _close_if_stale(conn)
    setattr(conn, _LAST_USED, started)


def _initialized() -> list[BaseDatabaseWrapper]:
    return list(connections.all(initialized_only=True))


def before_request(check_idle_after: float = 1.0) -> tuple[float, dict[str, int]]:
    """Prepare this thread's connections; return the state :func:`after_request` needs."""
    now = time.monotonic()
    depths: dict[str, int] = {}
    for conn in _initialized():
        depths[conn.alias] = len(conn.atomic_blocks)
        _prepare(conn, now, check_idle_after)
    with suppress(Exception):
        reset_queries()
    return now, depths


def after_request(state: tuple[float, dict[str, int]], exc: BaseException | None = None) -> None:
    """Clean up after a unit of work that raised *exc* (or None); never raise."""
    started, depths = state
    suspect = exc is not None and not isinstance(exc, DatabaseError)
    for conn in _initialized():
        try:
            _finish(conn, depths.get(conn.alias, 0), started, suspect)
        except Exception as error:
            log.warning("db_cleanup_failed", alias=conn.alias, error=repr(error))
            _discard(conn)
    try:
        close_caches()
    except Exception as error:
        log.warning("cache_close_failed", error=repr(error))


@contextmanager
def request_scope(check_idle_after: float = 1.0) -> Iterator[None]:
    """Run a block of work with Django's request-cycle DB hygiene, hardened (see module doc).

    Usable as ``with request_scope():`` or as a decorator ``@request_scope()``.
    """
    state = before_request(check_idle_after)
    try:
        yield
    except BaseException as exc:
        after_request(state, exc)
        raise
    after_request(state)


def refresh_connections() -> None:
    """Check this thread's idle connections now, for a handler about to query after a long pause.

    A health check runs once per unit of work, so a handler that computes for
    longer than ``wait_timeout`` between two queries meets a dead connection.
    Call this (outside ``atomic``) before resuming database work.
    """
    for conn in _initialized():
        if conn.in_atomic_block or conn.connection is None:
            continue
        _close_if_stale(conn)
        if conn.connection is not None and not _usable(conn):
            _close_quietly(conn)


def close_expired_connections() -> float | None:
    """Close this thread's idle connections past ``CONN_MAX_AGE``; return seconds to next expiry."""
    now = time.monotonic()
    soonest: float | None = None
    for conn in _initialized():
        if conn.connection is None or conn.in_atomic_block or conn.close_at is None:
            continue
        if now >= conn.close_at:
            _close_quietly(conn)
        else:
            wait = conn.close_at - now
            soonest = wait if soonest is None else min(soonest, wait)
    return soonest


def close_thread_connections() -> None:
    """Close every connection this thread holds (at thread exit, before a fork)."""
    for conn in _initialized():
        _close_quietly(conn)
