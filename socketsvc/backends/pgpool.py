"""Django's PostgreSQL connection pool (``OPTIONS["pool"]``, psycopg 3) under socketsvc.

With a pool, ``CONN_MAX_AGE`` is 0: every unit of work takes a connection
from the pool at its first query and gives it back at its end, so the
lifecycle's check of a *reused* wrapper never sees it. The pool checks a
connection it hands out only when ``CONN_HEALTH_CHECKS`` is on, with a round
trip, and after a failed check it backs off (a second, then two...) before
trying the next, which after a server restart makes a request wait several
seconds. socketsvc checks what the pool hands out by the same rule as every
other connection: one given back within the last ``DB_CHECK_AFTER_IDLE``
seconds without a round trip (has the server closed its socket?), any other
with the pool's own empty query; a dead one is closed and given back (the
pool opens a replacement) and the next is tried at once.

A process that forks (``multiprocessing``, a handler's own ``os.fork``)
inherits the pool's connections: sockets it shares with its parent. The
child forgets the inherited pools (a new one is made on first use) and keeps
their connections referenced, never closed, so it cannot end its parent's
sessions.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from contextlib import suppress
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from ..dbstats import stats
from .base import peer_closed

_GUARDED = "_socketsvc_pool_guarded"
# Connections a forked child inherited from its parent's pools: never closed.
_inherited: list[Any] = []


class _Connection:
    """Adapts a raw psycopg connection to :func:`peer_closed`, which reads ``.connection``."""

    __slots__ = ("connection",)

    def __init__(self, raw: Any) -> None:
        self.connection = raw


class PoolGuard:
    """Checks each connection the pool hands out, and records when each was given back."""

    def __init__(self, pool: Any, recent: float) -> None:
        self.recent = recent
        self.returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._pool = pool
        self._getconn = pool.getconn
        self._putconn = pool.putconn
        self._round_trip = type(pool).check_connection
        # Every pooled connection may be dead (after a server restart): try
        # them all, then one the pool has just opened.
        self._attempts = int(getattr(pool, "max_size", 1)) + 1

    def alive(self, raw: Any) -> bool:
        """Without a round trip if *raw* came back recently and its socket is quiet."""
        last = self.returned.get(raw)
        recent = last is not None and time.monotonic() - last < self.recent
        if recent and peer_closed(_Connection(raw)) is False:
            return True
        try:
            self._round_trip(raw)
        except Exception:
            return False
        return True

    def getconn(self, timeout: float | None = None) -> Any:
        """Hand out a live connection; a dead one is closed and given back, which makes the
        pool open another, and the next one is tried at once (no backoff)."""
        for _ in range(self._attempts):
            raw = self._getconn(timeout)
            if self.alive(raw):
                return raw
            stats.bump("dead_connections_replaced")
            with suppress(Exception):
                raw.close()
            self._putconn(raw)
        return self._getconn(timeout)

    def putconn(self, raw: Any) -> None:
        """Give *raw* back to the pool, remembering when."""
        self.returned[raw] = time.monotonic()
        self._putconn(raw)


_lock = threading.Lock()


def guard(conn: BaseDatabaseWrapper) -> None:
    """Check the connections the pool of *conn* hands out, if it has one (once per pool)."""
    pool = getattr(conn, "pool", None)
    if pool is None or getattr(pool, _GUARDED, False):
        return
    with _lock:
        if getattr(pool, _GUARDED, False):
            return
        if not hasattr(type(pool), "check_connection"):
            return  # too old a psycopg_pool: its own check (or none) applies
        from ..conf import get_config

        watch = PoolGuard(pool, max(get_config().DB_CHECK_AFTER_IDLE, 0.0))
        pool.getconn = watch.getconn
        pool.putconn = watch.putconn
        setattr(pool, _GUARDED, True)


def _forget_inherited_pools() -> None:
    """In a forked child: drop the parent's pools without closing their connections."""
    backend = sys.modules.get("django.db.backends.postgresql.base")
    pools = getattr(getattr(backend, "DatabaseWrapper", None), "_connection_pools", None)
    if not pools:
        return
    for pool in list(pools.values()):
        _inherited.append(pool)
        _inherited.extend(getattr(pool, "_pool", ()))
    pools.clear()
    # The forking thread's own checked-out connections belong to those pools too.
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.vendor == "postgresql" and conn.settings_dict["OPTIONS"].get("pool"):
            _inherited.append(conn.connection)
            conn.connection = None


os.register_at_fork(after_in_child=_forget_inherited_pools)
