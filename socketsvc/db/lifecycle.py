"""The database and cache lifecycle around one unit of work, in the thread that runs it.

Django recycles connections only around HTTP requests (``request_started`` and
``request_finished`` call ``close_old_connections()``). A long-running process
never sends those signals, so after MySQL's ``wait_timeout`` its connection is
dead and the next query raises ``OperationalError(2006)``. :func:`request_scope`
does what Django does around an HTTP request, plus what Django leaves open:

* before: for each of this thread's connections that is not inside an outer
  ``atomic`` block, drop it if unusable or past ``CONN_MAX_AGE``, and check it
  is alive whatever ``CONN_HEALTH_CHECKS`` says, replacing it if dead (see
  :mod:`socketsvc.db.liveness`); reset the query log.
* during: a connection idle past the threshold between two of the work's own
  queries is checked before the next one (:mod:`socketsvc.db.liveness`).
* after: roll back any ``atomic`` block the work left open, roll back and
  restore autocommit if the work switched it off; an exception that is not a
  database error (a timeout, a signal, a bug) marks the connections suspect,
  so they are pinged; then the same guarded close; close caches.

Nothing here ever raises out: a driver connection broken behind Django's back
is discarded, and the next unit of work gets a fresh one. It is usable on its
own by anyone writing a long-running loop::

    from socketsvc.db.lifecycle import request_scope

    while True:
        job = queue.get()
        with request_scope():
            job.run()
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import close_caches
from django.core.cache.backends.base import BaseCache
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.module_loading import import_string

from socketsvc.db import liveness, outages
from socketsvc.db.stats import stats
from socketsvc.observe import events

log = structlog.get_logger(__name__)


_local = threading.local()


# Raw connections handed out by a pool (OPTIONS["pool"]) that were already counted:
# taking one from the pool again is not a connect.
_pooled_seen: weakref.WeakSet[Any] = weakref.WeakSet()


def count_connect(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Count a new database connection (a ``connection_created`` receiver)."""
    if connection.settings_dict.get("OPTIONS", {}).get("pool"):
        with suppress(TypeError):
            if connection.connection in _pooled_seen:
                return
            _pooled_seen.add(connection.connection)
    stats.bump("connects")
    _local.connects = getattr(_local, "connects", 0) + 1
    # A reconnect replaces a connection that died, not one closed in good order
    # (CONN_MAX_AGE reached, or 0: closed after each unit of work).
    reconnect = liveness.take_lost(connection.alias)
    if reconnect:
        stats.bump("reconnects")
        _local.reconnects = getattr(_local, "reconnects", 0) + 1
    events.db_connected(reconnect)


def thread_connects() -> tuple[int, int]:
    """Return (connections opened, of which reconnects) by this thread, for per-request logs."""
    return int(getattr(_local, "connects", 0)), int(getattr(_local, "reconnects", 0))


def _discard(conn: BaseDatabaseWrapper) -> None:
    stats.bump("discarded")
    liveness.note_lost(conn)
    liveness.discard(conn)


def _close_if_stale(conn: BaseDatabaseWrapper) -> None:
    """Close the connection if unusable or too old; never raise."""
    broken = conn.connection is not None and conn.errors_occurred
    try:
        conn.close_if_unusable_or_obsolete()
        if broken and conn.connection is None:
            liveness.note_lost(conn)  # closed as unusable after an error, not for its age
    except Exception as exc:
        # E.g. the raw driver connection was closed behind Django's back:
        # Django's close() then raises, after forgetting the connection.
        log.warning("db_connection_close_failed", alias=conn.alias, error=repr(exc))
        if conn.connection is not None:
            _discard(conn)


def _prepare(conn: BaseDatabaseWrapper, now: float, check_idle_after: float) -> None:
    if conn.in_atomic_block:
        # An outer transaction (a caller's, or a test's) owns this connection.
        return
    _close_if_stale(conn)
    if conn.connection is None:
        return
    # Every reused connection is checked here, guarded, rather than by Django's
    # lazy health check at the first cursor (which raises out of the handler
    # when the driver connection was closed behind Django's back).
    if not liveness.alive(conn, recent=liveness.idle_for(conn, now) < check_idle_after):
        liveness.replaced(conn)
        liveness.close_quietly(conn)
        return
    liveness.touch(conn, now)
    # Django's own health check would ping again at the first cursor.
    conn.health_check_done = True  # type: ignore[attr-defined]


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


def _finish(conn: BaseDatabaseWrapper, depth: int, suspect: bool) -> None:
    if not _unwind_atomic(conn, depth):
        return
    if conn.in_atomic_block:
        return
    if not _restore_autocommit(conn):
        return
    if suspect and conn.connection is not None:
        conn.errors_occurred = True
    _close_if_stale(conn)


@functools.cache
def _caches_need_closing() -> bool:
    """Return False when no configured cache backend has a ``close()`` that does anything.

    Django's ``close_caches()`` looks up every cache alias in an asgiref Local
    on every request; for the in-process, file, database and dummy caches
    (``BaseCache.close`` is a no-op) that is all it does.
    """
    for config in getattr(settings, "CACHES", {}).values():
        try:
            backend = import_string(config["BACKEND"])
        except Exception:
            return True  # let close_caches() meet it, as before
        if getattr(backend, "close", BaseCache.close) is not BaseCache.close:
            return True
    return False


def forget_cache_backends(*, setting: str, **kwargs: Any) -> None:
    """Look at the cache backends again when a test changes ``CACHES`` (``setting_changed``)."""
    if setting == "CACHES":
        _caches_need_closing.cache_clear()


def _initialized() -> list[BaseDatabaseWrapper]:
    return liveness.thread_connections()


def _make_patient() -> None:
    """Have each of this thread's connection wrappers wait out an unreachable server, once."""
    if getattr(_local, "patient", False):
        return
    for alias in connections:
        conn = connections[alias]
        outages.make_patient(conn)
        if conn.vendor == "postgresql" and conn.settings_dict.get("OPTIONS", {}).get("pool"):
            from socketsvc.db import pgpool  # needs psycopg_pool: only where a pool is set

            pgpool.guard(conn)  # the pool's connections are checked as any other
    _local.patient = True


def before_request(check_idle_after: float = 1.0) -> dict[str, int]:
    """Prepare this thread's connections; return the state :func:`after_request` needs."""
    _make_patient()
    now = time.monotonic()
    depths: dict[str, int] = {}
    for conn in _initialized():
        depths[conn.alias] = len(conn.atomic_blocks)
        _prepare(conn, now, check_idle_after)
        conn.queries_log.clear()  # what Django's reset_queries() does, on the same walk
    return depths


def after_request(depths: dict[str, int], exc: BaseException | None = None) -> None:
    """Clean up after a unit of work that raised *exc* (or None); never raise."""
    suspect = exc is not None and not isinstance(exc, DatabaseError)
    for conn in _initialized():
        try:
            _finish(conn, depths.get(conn.alias, 0), suspect)
        except Exception as error:
            log.warning("db_cleanup_failed", alias=conn.alias, error=repr(error))
            _discard(conn)
    if not _caches_need_closing():
        return
    try:
        close_caches()
    except Exception as error:
        log.warning("cache_close_failed", error=repr(error))


@contextmanager
def request_scope(check_idle_after: float = 1.0) -> Iterator[None]:
    """Run a block of work with Django's request-cycle DB hygiene, hardened (see module doc).

    Usable as ``with request_scope():`` or as a decorator ``@request_scope()``.
    """
    depths = before_request(check_idle_after)
    try:
        with liveness.guarding(check_idle_after):
            yield
    except BaseException as exc:
        after_request(depths, exc)
        raise
    after_request(depths)


def refresh_connections() -> None:
    """Check this thread's idle connections now (outside ``atomic``), replacing dead ones.

    Inside :func:`request_scope` this happens on its own before the first
    query after a pause; this remains for code that runs outside it.
    """
    for conn in _initialized():
        if conn.in_atomic_block or conn.connection is None:
            continue
        _close_if_stale(conn)
        if conn.connection is not None and not liveness.usable(conn):
            liveness.close_quietly(conn)


def close_expired_connections() -> float | None:
    """Close this thread's idle connections past ``CONN_MAX_AGE``; return seconds to next expiry."""
    now = time.monotonic()
    soonest: float | None = None
    for conn in _initialized():
        if conn.connection is None or conn.in_atomic_block or conn.close_at is None:
            continue
        if now >= conn.close_at:
            liveness.close_quietly(conn)
        else:
            wait = conn.close_at - now
            soonest = wait if soonest is None else min(soonest, wait)
    return soonest


def idle_wait(wait: Callable[[float], object], seconds: float, done: Callable[[], bool]) -> None:
    """Wait up to *seconds*, by ``wait(timeout)``, until ``done()``; meanwhile close each of this
    thread's connections when it reaches ``CONN_MAX_AGE``, so an idle thread holds none."""
    deadline = time.monotonic() + seconds
    while not done():
        expiry = close_expired_connections()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        wait(left if expiry is None else min(left, expiry))


def close_thread_connections() -> None:
    """Close every connection this thread holds (at thread exit, before a fork)."""
    for conn in _initialized():
        liveness.close_quietly(conn)
