"""MySQL and MariaDB: error codes, the no-round-trip liveness check, ``wait_timeout``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Warning
from django.db import DatabaseError, InterfaceError

from socketsvc.db.vendors.base import VendorOps, peer_closed

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from socketsvc.conf import Config

# Client and server codes that mean the connection is gone or could not be
# made: server gone away (2006), lost during query (2013, 2055), can't connect
# by socket/TCP/host (2002, 2003, 2005), commands out of sync (2014),
# inactivity timeout (4031), too many connections, in all or for the user
# (1040; 1203 for max_user_connections, 1226 for an account's own cap: a
# reconnect rush), connection killed (1927) and server shutdown (1053). 1317
# (query interrupted) is absent on purpose: the connection survives it.
CONNECTION_ERRORS = frozenset(
    {1040, 1053, 1203, 1226, 1927, 2002, 2003, 2005, 2006, 2013, 2014, 2055, 4031}
)

# A transaction that lost a race: lock wait timeout (1205), deadlock (1213).
CONFLICTS = frozenset({1205, 1213})

# Codes that say the settings are wrong, not the server away: waiting cannot help.
_LOGIN = "the database refused the login: check USER and PASSWORD"
MISCONFIGURED = {
    1044: "the user may not use the database: check NAME and USER (and the user's grants)",
    1045: _LOGIN,
    1049: "the database does not exist: check NAME",
    1129: "the server blocked this host after connection errors: run FLUSH HOSTS",
    1130: "the server refuses this host: check USER (the host part of its grants)",
    1251: "the server wants an authentication the client lacks: check USER",
    1698: _LOGIN,
    2059: "the user's authentication plugin cannot be loaded: check USER",
    3118: "the user's account is locked: unlock it, or check USER",
    4151: "the user's account is locked: unlock it, or check USER",
}

# Where max_statement_bytes keeps what it read: (the raw connection, the value).
_PACKET = "_socketsvc_max_allowed_packet"

# MySQL's and MariaDB's default wait_timeout; the daemon reads the real value.
DEFAULT_WAIT_TIMEOUT = 28800


def _numeric_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    return None


# The size of one INSERT of many rows (well below any max_allowed_packet).
_INSERT_BYTES = 1 << 20


class MySQLOps(VendorOps):
    """mysqlclient on MySQL or MariaDB."""

    def execute_each(self, cursor: Any, sql: str, rows: list[list[Any]]) -> None:
        """One ``execute()`` per row: MySQLdb's ``executemany()`` rewrites an INSERT into one
        multi-row statement, and cannot when the clause after its VALUES has a parameter."""
        for row in rows:
            cursor.execute(sql, row)

    def adding_clause(
        self, conn: BaseDatabaseWrapper, table: str, keys: list[str], column: str
    ) -> str:
        """As the base's, with ``ON DUPLICATE KEY UPDATE``."""
        quote = conn.ops.quote_name
        value = quote("value")
        return (
            f"ON DUPLICATE KEY UPDATE {value} = IF({quote(column)} = %s, "
            f"GREATEST({value}, VALUES({value})), {value} + VALUES({value}))"
        )

    def insert_rows(
        self, conn: BaseDatabaseWrapper, table: str, columns: list[str], rows: list[list[Any]]
    ) -> None:
        """Insert *rows* as multi-row INSERTs of at most ``_INSERT_BYTES`` each, built here.

        MySQLdb escapes every parameter of every row in Python; a column whose
        value is the very same object in each row is escaped once.
        """
        if not rows:
            return
        literal = conn.connection.literal
        first = rows[0]
        once = [
            literal(first[n]).decode() if all(row[n] is first[n] for row in rows) else None
            for n in range(len(columns))
        ]
        quote = conn.ops.quote_name
        head = f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) VALUES "  # noqa: S608
        values: list[str] = []
        size = 0
        with conn.cursor() as cursor:
            for row in rows:
                text = (
                    "("
                    + ", ".join(
                        kept if kept is not None else literal(value).decode()
                        for kept, value in zip(once, row, strict=True)
                    )
                    + ")"
                )
                values.append(text)
                size += len(text) + 2
                if size >= _INSERT_BYTES:
                    cursor.execute(head + ", ".join(values))
                    values, size = [], 0
            if values:
                cursor.execute(head + ", ".join(values))

    vendor = "mysql"

    def driver_code(self, exc: BaseException) -> int | None:
        """Return the numeric MySQL error code (Django keeps the driver's args)."""
        for candidate in (exc, exc.__cause__):
            code = None if candidate is None else _numeric_code(candidate)
            if code is not None:
                return code
        return None

    def is_connection_error(self, exc: BaseException) -> bool:
        """Return True for the codes above (and InterfaceError, a closed connection)."""
        if isinstance(exc, InterfaceError):
            return True
        return isinstance(exc, DatabaseError) and self.driver_code(exc) in CONNECTION_ERRORS

    def misconfiguration(self, exc: BaseException) -> str | None:
        """Return what to fix for a login or database the settings got wrong."""
        code = self.driver_code(exc)
        return None if code is None else MISCONFIGURED.get(code)

    def is_conflict(self, exc: BaseException) -> bool:
        """Return True for a deadlock or a lock wait timeout."""
        return isinstance(exc, DatabaseError) and self.driver_code(exc) in CONFLICTS

    def closed_by_server(self, conn: Any) -> bool | None:
        """Look for the server's close on the socket (see :func:`.base.peer_closed`)."""
        return peer_closed(conn)

    def max_statement_bytes(self, conn: Any) -> int | None:
        """Return ``max_allowed_packet``, read once per connection.

        MySQL answers a larger statement by closing the connection, which looks
        like an outage (2006) to the client: callers check the size first.
        """
        raw = conn.connection
        known = getattr(conn, _PACKET, None)
        if known is not None and known[0] is raw:
            return int(known[1])
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@max_allowed_packet")
            limit = int(cursor.fetchone()[0])
        setattr(conn, _PACKET, (conn.connection, limit))
        return limit

    def idle_session_timeout(self, conn: Any) -> int | None:
        """Return the session's ``wait_timeout``."""
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@SESSION.wait_timeout")
            return int(cursor.fetchone()[0])

    def check(self, alias: str, database: Mapping[str, Any], config: Config) -> list[CheckMessage]:
        """Warn about connections kept longer than the server's default ``wait_timeout``."""
        messages: list[CheckMessage] = []
        max_age = database.get("CONN_MAX_AGE", 0)
        too_old = max_age is None or max_age > DEFAULT_WAIT_TIMEOUT
        if too_old and not database.get("CONN_HEALTH_CHECKS", False):
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] keeps connections for "
                    f"{'ever' if max_age is None else f'{max_age} s'}, longer than "
                    f"MySQL's default wait_timeout ({DEFAULT_WAIT_TIMEOUT} s), without "
                    "CONN_HEALTH_CHECKS.",
                    hint="socketsvc checks its own connections, but other processes with "
                    "these settings will fail with 'MySQL server has gone away'. Set "
                    "CONN_HEALTH_CHECKS=True or a CONN_MAX_AGE below wait_timeout.",
                    id="socketsvc.W004",
                )
            )
        if config.DB_CHECK_AFTER_IDLE >= DEFAULT_WAIT_TIMEOUT:
            messages.append(
                Warning(
                    f"SOCKETSVC['DB_CHECK_AFTER_IDLE'] ({config.DB_CHECK_AFTER_IDLE:g} s) is "
                    f"not below MySQL's default wait_timeout ({DEFAULT_WAIT_TIMEOUT} s), "
                    f"which DATABASES[{alias!r}] is subject to.",
                    hint="A connection idle that long is dead when reused without a check. "
                    "Keep it well below wait_timeout (0 checks every reused connection).",
                    id="socketsvc.W005",
                )
            )
        return messages


OPS = MySQLOps()
