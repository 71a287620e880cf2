"""PostgreSQL (psycopg 3 or psycopg2): SQLSTATEs that mean the server cannot be reached,
the no-round-trip liveness check, ``idle_session_timeout``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, InterfaceError

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

from .base import VendorOps, is_connect_failure, peer_closed

# Class 08 is "connection exception"; 57P01..57P05 are administrator shutdown,
# crash shutdown, cannot connect now, database dropped and idle session
# timeout; 53300 is too many connections.
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "53300"})

# The states socketsvc reports when libpq gives none (see driver_code).
UNABLE_TO_CONNECT = "08001"
CONNECTION_FAILURE = "08006"


class PostgreSQLOps(VendorOps):
    """psycopg on PostgreSQL."""

    vendor = "postgresql"

    def driver_code(self, exc: BaseException) -> str | None:
        """Return the SQLSTATE of a psycopg error (raised directly or wrapped by Django).

        libpq gives none when it could not open a connection or lost one
        without an error from the server: a connect that failed is then 08001
        and a lost connection 08006, as the SQL standard names them.
        """
        for candidate in (exc, exc.__cause__):
            if candidate is None:
                continue
            state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
            if isinstance(state, str) and state:
                return state
        cause = exc.__cause__ or exc
        if not (type(cause).__module__ or "").startswith("psycopg"):
            return None
        if type(cause).__name__ == "PoolTimeout":
            return UNABLE_TO_CONNECT  # the pool could not hand out a connection in time
        if type(cause).__name__ == "OperationalError":
            return UNABLE_TO_CONNECT if is_connect_failure(exc) else CONNECTION_FAILURE
        return None

    def is_connection_error(self, exc: BaseException) -> bool:
        """Return True for class 08, the shutdown/timeout states, or a closed connection."""
        if isinstance(exc, InterfaceError):
            return True
        if not isinstance(exc, DatabaseError):
            return False
        state = self.driver_code(exc)
        return state is not None and (state.startswith("08") or state in _CONNECTION_STATES)

    def closed_by_server(self, conn: Any) -> bool | None:
        """Tell from the socket, without a round trip, whether the server closed the session.

        PostgreSQL sends an error (57P01 terminated, 57P05 idle-session
        timeout) before closing, so an idle connection's socket turns
        readable. Anything else readable on an idle connection (a NOTIFY, a
        parameter change after a reload) also counts as closed: the connection
        is replaced, never wrongly kept.
        """
        raw = conn.connection
        if getattr(raw, "broken", False) or getattr(raw, "closed", False):
            return True
        return peer_closed(conn)

    def prepare(self, conn: BaseDatabaseWrapper) -> None:
        """Check connections of Django's pool as socketsvc checks any other (see pgpool)."""
        if conn.settings_dict.get("OPTIONS", {}).get("pool"):
            from . import pgpool

            pgpool.guard(conn)

    def idle_session_timeout(self, conn: Any) -> int | None:
        """Return ``idle_session_timeout`` in seconds (None when off)."""
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT setting::int FROM pg_settings WHERE name = 'idle_session_timeout'"
            )
            row = cursor.fetchone()
        milliseconds = int(row[0]) if row else 0
        return milliseconds // 1000 or None


OPS = PostgreSQLOps()
