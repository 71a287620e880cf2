"""The generic vendor: what holds for every database Django supports."""

from __future__ import annotations

import select
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage
from django.db import DatabaseError, InterfaceError

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from socketsvc.conf import Config

# Modules whose exceptions are database driver errors (their text may hold SQL
# and connection details).
_DRIVER_MODULES = (
    "MySQLdb",
    "pymysql",
    "psycopg",
    "psycopg2",
    "psycopg_pool",
    "sqlite3",
    "oracledb",
    "_mysql",
)


def from_database_layer(exc: BaseException) -> bool:
    """Return True if *exc* is a Django database error or a driver's own exception."""
    if isinstance(exc, DatabaseError):
        return True
    module = type(exc).__module__ or ""
    return module.split(".", 1)[0] in _DRIVER_MODULES


# Set on an exception raised while opening a connection (no statement was sent).
_CONNECT_FAILED = "_socketsvc_connect_failed"


def mark_connect_failure(exc: BaseException) -> None:
    """Remember that *exc* was raised while opening a connection."""
    with suppress(AttributeError):
        setattr(exc, _CONNECT_FAILED, True)


def open_marked(connect: Callable[[], None]) -> None:
    """Run *connect* (it opens a connection); an exception it raises is marked as a connect's."""
    try:
        connect()
    except Exception as exc:
        mark_connect_failure(exc)
        raise


def is_connect_failure(exc: BaseException) -> bool:
    """Return True if *exc* (or what it wraps) was raised while opening a connection."""
    return any(getattr(e, _CONNECT_FAILED, False) for e in (exc, exc.__cause__) if e is not None)


def peer_closed(conn: Any) -> bool | None:
    """Look for the server's close on a driver connection's socket, without a round trip.

    An idle connection has nothing to read: readable means the server closed
    it (a kill, an idle timeout, a restart) or sent an error before doing so.
    It cannot see a peer that vanished without a FIN (a dropped TCP route):
    callers ping connections idle for longer than a second or so. None when
    the driver gives no descriptor.
    """
    fileno = getattr(conn.connection, "fileno", None)
    if fileno is None:
        return None
    try:
        poller = select.poll()
        poller.register(fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError, TypeError):
        return None
    except Exception:
        return True  # the driver refused to give its descriptor: it is closed


class VendorOps:
    """Vendor knowledge with generic defaults; subclasses override what their server allows."""

    vendor = "generic"

    def driver_code(self, exc: BaseException) -> int | str | None:
        """Return the driver's error code for *exc*, if this vendor's driver raised it."""
        return None

    def is_connection_error(self, exc: BaseException) -> bool:
        """Return True if *exc* means the server cannot be reached or the link broke."""
        return isinstance(exc, InterfaceError)

    def is_conflict(self, exc: BaseException) -> bool:
        """Return True if *exc* says the statement lost a race with another transaction (a
        deadlock, a lock wait timeout, a serialization failure): it was rolled back, and the
        same work tried again can succeed."""
        return False

    def closed_by_server(self, conn: Any) -> bool | None:
        """Tell without a round trip whether the server closed an idle connection.

        None when this cannot be told cheaply; the caller then pings.
        """
        return None

    def idle_session_timeout(self, conn: Any) -> int | None:
        """Return after how many idle seconds the server drops a session, if it does."""
        return None

    def misconfiguration(self, exc: BaseException) -> str | None:
        """Return what to fix when *exc* says the settings are wrong (not an outage), else None.

        The text names settings, never values: it may reach a client.
        """
        return None

    def max_statement_bytes(self, conn: BaseDatabaseWrapper) -> int | None:
        """Return the largest statement the server takes on this connection (None: no limit)."""
        return None

    def insert_rows(
        self, conn: BaseDatabaseWrapper, table: str, columns: list[str], rows: list[list[Any]]
    ) -> None:
        """Insert *rows* (values prepared for *conn*, in *columns*' order) into *table*, fast.

        Here: ``executemany()`` a thousand rows at a time (MySQLdb sends each
        thousand as one multi-row INSERT; SQLite runs them in its own loop).
        """
        quote = conn.ops.quote_name
        names = ", ".join(quote(column) for column in columns)
        places = ", ".join(["%s"] * len(columns))
        sql = f"INSERT INTO {quote(table)} ({names}) VALUES ({places})"  # noqa: S608
        with conn.cursor() as cursor:
            for start in range(0, len(rows), 1000):
                cursor.executemany(sql, rows[start : start + 1000])

    def add_to_rows(
        self,
        conn: BaseDatabaseWrapper,
        table: str,
        keys: list[str],
        rows: list[list[Any]],
        keep_max: tuple[str, str],
    ) -> None:
        """Add each row's last value (column ``value``) to the row with its *keys*, or insert it.

        Rows whose column ``keep_max[0]`` equals ``keep_max[1]`` keep the larger
        value instead of the sum (the vendor's clause: :meth:`adding_clause`).
        """
        if not rows:
            return
        quote = conn.ops.quote_name
        names = ", ".join(quote(column) for column in [*keys, "value"])
        places = ", ".join(["%s"] * (len(keys) + 1))
        clause = self.adding_clause(conn, table, keys, keep_max[0])
        sql = f"INSERT INTO {quote(table)} ({names}) VALUES ({places}) {clause}"  # noqa: S608
        with conn.cursor() as cursor:
            self.execute_each(cursor, sql, [[*row, keep_max[1]] for row in rows])

    def execute_each(self, cursor: Any, sql: str, rows: list[list[Any]]) -> None:
        """Run *sql* once per row of parameters (here: ``executemany()``)."""
        cursor.executemany(sql, rows)

    def adding_clause(
        self, conn: BaseDatabaseWrapper, table: str, keys: list[str], column: str
    ) -> str:
        """Return what :meth:`add_to_rows` appends to its INSERT (one ``%s``: the value of
        *column* whose rows keep the larger value). Here: ``ON CONFLICT ... DO UPDATE``
        (PostgreSQL, SQLite)."""
        quote = conn.ops.quote_name
        larger = "GREATEST" if conn.vendor == "postgresql" else "MAX"
        value = f"{quote(table)}.{quote('value')}"
        return (
            f"ON CONFLICT ({', '.join(quote(key) for key in keys)}) DO UPDATE SET "
            f"{quote('value')} = CASE WHEN {quote(table)}.{quote(column)} = %s "
            f"THEN {larger}({value}, EXCLUDED.{quote('value')}) "
            f"ELSE {value} + EXCLUDED.{quote('value')} END"
        )

    def check(self, alias: str, database: Mapping[str, Any], config: Config) -> list[CheckMessage]:
        """Return system-check messages about one ``DATABASES`` entry of this vendor."""
        return []


OPS = VendorOps()
