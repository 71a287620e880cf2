"""PostgreSQL (psycopg 3 or psycopg2): SQLSTATEs that mean the server cannot be reached,
the no-round-trip liveness check, ``idle_session_timeout``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, InterfaceError

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

from socketsvc.db.vendors.base import VendorOps, is_connect_failure, peer_closed

# Class 08 is "connection exception"; 57P01..57P05 are administrator shutdown,
# crash shutdown, cannot connect now, database dropped and idle session
# timeout; 53300 is too many connections.
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "53300"})

# The states socketsvc reports when libpq gives none (see driver_code).
UNABLE_TO_CONNECT = "08001"
CONNECTION_FAILURE = "08006"

# libpq gives no SQLSTATE for a connect the server refused at start-up, only
# the server's message: these say which state it stands for (English messages).
_STARTUP_MESSAGES = (
    ("too many connections", "53300"),  # in all, for the role, for the database
    ("too many clients", "53300"),
    ("connection slots are reserved", "53300"),
    ("the database system is", "57P03"),  # starting up, shutting down, in recovery
    ("password authentication failed", "28P01"),
    ("is not permitted to log in", "28000"),
    ("no pg_hba.conf entry", "28000"),
    ("does not have connect privilege", "42501"),
    ("permission denied for database", "42501"),
    ('role "', "28000"),  # role "x" does not exist
    ("does not exist", "3D000"),  # database "x" does not exist
)

# A transaction that lost a race: serialization failure, deadlock, lock not available
# (lock_timeout).
_CONFLICT_STATES = frozenset({"40001", "40P01", "55P03"})

# States that say the settings are wrong, not the server away: waiting cannot help.
MISCONFIGURED = {
    "28P01": "the database refused the login: check USER and PASSWORD",
    "28000": "the server refuses this login: check USER (the role must exist and may log "
    "in) and the server's pg_hba.conf",
    "3D000": "the database does not exist: check NAME",
    "42501": "the role may not connect to the database: check NAME and USER (GRANT CONNECT)",
}


class PostgreSQLOps(VendorOps):
    """psycopg on PostgreSQL."""

    def insert_rows(
        self, conn: BaseDatabaseWrapper, table: str, columns: list[str], rows: list[list[Any]]
    ) -> None:
        """Insert *rows* with ``COPY … FROM STDIN``: one stream, no SQL to build or parse."""
        quote = conn.ops.quote_name
        names = ", ".join(quote(column) for column in columns)
        with (
            conn.cursor() as cursor,
            cursor.cursor.copy(f"COPY {quote(table)} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

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
            if not is_connect_failure(exc):
                return CONNECTION_FAILURE
            message = str(cause).lower()
            for words, state in _STARTUP_MESSAGES:
                if words in message:
                    return state
            return UNABLE_TO_CONNECT
        return None

    def misconfiguration(self, exc: BaseException) -> str | None:
        """Return what to fix for a login or database the settings got wrong."""
        state = self.driver_code(exc)
        return None if state is None else MISCONFIGURED.get(state)

    def is_conflict(self, exc: BaseException) -> bool:
        """Return True for a serialization failure, a deadlock or a lock timeout."""
        return isinstance(exc, DatabaseError) and self.driver_code(exc) in _CONFLICT_STATES

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
