"""PostgreSQL (psycopg 3 or psycopg2): SQLSTATE classes that mean the server cannot be reached."""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError, InterfaceError

from .base import VendorOps

# Class 08 is "connection exception"; 57P01..57P05 are administrator shutdown,
# crash shutdown, cannot connect now, database dropped and idle session
# timeout; 53300 is too many connections.
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "53300"})


class PostgreSQLOps(VendorOps):
    """psycopg on PostgreSQL."""

    vendor = "postgresql"

    def driver_code(self, exc: BaseException) -> str | None:
        """Return the SQLSTATE of a psycopg error (raised directly or wrapped by Django)."""
        for candidate in (exc, exc.__cause__):
            if candidate is None:
                continue
            state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
            if isinstance(state, str) and state:
                return state
        return None

    def is_connection_error(self, exc: BaseException) -> bool:
        """Return True for class 08, the shutdown/timeout states, or a closed connection."""
        if isinstance(exc, InterfaceError):
            return True
        if not isinstance(exc, DatabaseError):
            return False
        state = self.driver_code(exc)
        if state is None:
            # psycopg reports a failed connect or a connection lost mid-query
            # as an OperationalError without a SQLSTATE.
            return type(exc.__cause__ or exc).__name__ == "OperationalError"
        return state.startswith("08") or state in _CONNECTION_STATES

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
