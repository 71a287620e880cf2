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

A checkout waits at most as long as the connect may (``DB_UNAVAILABLE_WAIT``,
see :func:`socketsvc.db.outages.time_left`), not the pool's own ``timeout``
(30 s by default): with the server down the pool cannot open a connection,
and the request gets -32001 on time. A pool that is merely full (every
connection in use) is waited for up to its own ``timeout``, as without
socketsvc.

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
from psycopg_pool import PoolTimeout

from socketsvc.db.outages import time_left
from socketsvc.db.stats import stats
from socketsvc.db.vendors.base import peer_closed

_GUARDED = "_socketsvc_pool_guarded"
# A checkout bounded by the connect's deadline still gets this long.
MIN_CHECKOUT_WAIT = 0.5
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
        self._max_size = int(getattr(pool, "max_size", 1))
        self._attempts = self._max_size + 1
        # How many connections this process has taken and not given back.
        self._out = 0
        self._out_lock = threading.Lock()

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
            raw = self._checkout(timeout)
            if self.alive(raw):
                return self._taken(raw)
            stats.bump("dead_connections_replaced")
            with suppress(Exception):
                raw.close()
            self._putconn(raw)
        return self._taken(self._checkout(timeout))

    def _taken(self, raw: Any) -> Any:
        with self._out_lock:
            self._out += 1
        return raw

    def _checkout(self, timeout: float | None) -> Any:
        """Take a connection, waiting no longer than the connect may (see the module
        docstring), unless the pool is full and only has to wait for one given back."""
        own = float(self._pool.timeout if timeout is None else timeout)
        left = time_left()
        if left is None or left + MIN_CHECKOUT_WAIT >= own:
            return self._getconn(timeout)
        bounded = max(left, MIN_CHECKOUT_WAIT)
        started = time.monotonic()
        try:
            return self._getconn(bounded)
        except PoolTimeout:
            if not self._full():
                raise
        return self._getconn(max(own - (time.monotonic() - started), MIN_CHECKOUT_WAIT))

    def _full(self) -> bool:
        """Whether this process has every connection the pool may open in use (the pool's
        own figures count connections it is still trying to open as well)."""
        return self._out >= self._max_size

    def putconn(self, raw: Any) -> None:
        """Give *raw* back to the pool, remembering when."""
        self.returned[raw] = time.monotonic()
        with self._out_lock:
            self._out = max(0, self._out - 1)
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
        from socketsvc.conf import get_config

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
