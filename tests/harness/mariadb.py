"""A throwaway ``mariadbd`` in a temporary directory, on a private Unix socket.

Tests that kill, restart or reconfigure the database use one of these; the
machine's shared MariaDB is never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import MySQLdb

from tests.harness import dbserver
from tests.harness.dbserver import ThrowawayServer

DB_NAME = "socketsvc_test"
SERVER_OPTIONS = [
    "--no-defaults",
    "--user=root",
    "--skip-networking",
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=16M",
    "--skip-log-bin",
    "--max-connections=200",
]


def require_binaries() -> None:
    """Fail loudly (never skip) when MariaDB's server binaries are missing."""
    missing = [b for b in ("mariadbd", "mariadb-install-db") if shutil.which(b) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: install Debian's mariadb-server "
            "(make test does this when run as root)"
        )


class MariaDB(ThrowawayServer):
    """One private server: datadir, socket and pid file under *base*."""

    program = "mariadbd"
    not_answering = MySQLdb.OperationalError

    vendor = "mysql"
    # What clients see, by driver code: a session killed or lost mid-query, a
    # server that is down, a connect refused, a statement interrupted, the
    # next query after the server dropped an idle session.
    lost_codes = (2013, 2006, 1927)
    down_codes = (2002, 2006, 2013)
    refused_code = 2002
    interrupted_code = 1317
    idle_dropped_codes = (2006,)
    # A connect refused by a locked account, and by an unknown database.
    locked_code = 4151
    unknown_database_code = 1049
    code_label = "MySQL error"

    def __init__(self, base: Path, options: tuple[str, ...] = ()) -> None:
        super().__init__(base, base / "error.log")
        # Beyond SERVER_OPTIONS (small, for a fast start); later ones win.
        self.options = options
        self.datadir = base / "data"
        self.socket = str(base / "m.sock")
        self.pid_file = base / "m.pid"

    # -- life cycle --------------------------------------------------------

    def install(self) -> None:
        """Create an empty datadir with root and no password."""
        require_binaries()
        self.base.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
                "--innodb-log-file-size=8M",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def copy_from(self, template: MariaDB) -> None:
        """Start from a copy of a stopped template's datadir."""
        self.base.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template.datadir, self.datadir, symlinks=True)

    def launch(self) -> subprocess.Popen[bytes]:
        """Start mariadbd on the private socket."""
        return subprocess.Popen(
            [
                "mariadbd",
                *SERVER_OPTIONS,
                *self.options,
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--pid-file={self.pid_file}",
                f"--log-error={self.log_file}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    # -- talking to it -----------------------------------------------------

    def query(self, sql: str, args: Any = None, db: str | None = None) -> list[tuple[Any, ...]]:
        """Run *sql* on a side connection of its own (never the daemon's)."""
        conn = MySQLdb.connect(unix_socket=self.socket, user="root", database=db or "")
        try:
            cursor = conn.cursor()
            cursor.execute(sql, args)
            rows = list(cursor.fetchall()) if cursor.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def url(self, db: str = DB_NAME, user: str = "root", password: str = "") -> str:
        """Return a DATABASE_URL in the Unix-socket form."""
        login = f"{user}:{password}" if password else user
        return f"mysql://{login}@{quote(self.socket, safe='')}/{db}"

    def add_login(self, name: str, password: str, max_connections: int = 0) -> None:
        """Create a user with every right on the test database (and a connection cap)."""
        self.query(
            f"CREATE USER '{name}'@'localhost' IDENTIFIED BY '{password}' "
            f"WITH MAX_USER_CONNECTIONS {int(max_connections)}"
        )
        self.query(f"GRANT ALL ON {DB_NAME}.* TO '{name}'@'localhost'")

    def allow_login(self, name: str, allowed: bool) -> None:
        """Lock or unlock a user's account (its open sessions stay)."""
        self.query(f"ALTER USER '{name}'@'localhost' ACCOUNT {'UNLOCK' if allowed else 'LOCK'}")

    def connect_as(self, name: str, password: str) -> Any:
        """Open a session as *name* (held by the test until it closes it)."""
        return MySQLdb.connect(
            unix_socket=self.socket, user=name, password=password, database=DB_NAME
        )

    def sessions(self, db: str = DB_NAME) -> list[tuple[int, str]]:
        """Return (id, command) of the client sessions on *db*, other than this query's own.

        SHOW PROCESSLIST, not information_schema.processlist: MariaDB 10.11
        crashes (ha_maria::drop_table on the query's temporary table) when
        sessions end while the latter is being read, as timeouts make them do.
        """
        conn = MySQLdb.connect(unix_socket=self.socket, user="root")
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT CONNECTION_ID()")
            (own,) = cursor.fetchone()
            cursor.execute("SHOW PROCESSLIST")
            return [
                (int(row[0]), str(row[4]))
                for row in cursor.fetchall()
                if row[3] == db and int(row[0]) != own
            ]
        finally:
            conn.close()

    def kill_session(self, session_id: int) -> bool:
        """KILL one session; False if it had already ended."""
        try:
            self.query(f"KILL {int(session_id)}")
        except MySQLdb.OperationalError:
            return False  # it ended on its own meanwhile
        return True

    def kill_query(self, session_id: int) -> None:
        """KILL QUERY: interrupt the statement a session runs, keeping the session."""
        self.query(f"KILL QUERY {int(session_id)}")

    def kill_sessions(self, db: str = DB_NAME) -> list[int]:
        """KILL every client session on *db*; return their ids."""
        return [session_id for session_id, _ in self.sessions(db) if self.kill_session(session_id)]

    def set_wait_timeout(self, seconds: int) -> None:
        """Set the global wait_timeout (applies to sessions opened afterwards)."""
        self.query(f"SET GLOBAL wait_timeout = {int(seconds)}")

    @staticmethod
    def quote(name: str) -> str:
        """Quote an identifier (``key`` is a reserved word)."""
        return f"`{name}`"

    @staticmethod
    def as_text(expression: str) -> str:
        """SQL that reads *expression* (a JSON column, say) as text."""
        return f"CAST({expression} AS CHAR)"

    @contextlib.contextmanager
    def holding_row_lock(self, table: str, row_id: str) -> Iterator[None]:
        """Hold *table*'s row *row_id* locked (SELECT ... FOR UPDATE) from a session of its own."""
        conn = MySQLdb.connect(unix_socket=self.socket, user="root", database=DB_NAME)
        try:
            cursor = conn.cursor()
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [row_id])
            yield
            conn.rollback()
        finally:
            conn.close()

    @contextlib.contextmanager
    def refusing_first_endings(self) -> Iterator[None]:
        """A trigger refuses to end a task (SUCCESSFUL or FAILED) on its first claim."""
        self.query(
            "CREATE TRIGGER refuse_first_ending BEFORE UPDATE ON socketsvc_task FOR EACH ROW "
            "BEGIN IF NEW.status IN ('SUCCESSFUL', 'FAILED') AND OLD.claims = 1 THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused on purpose'; END IF; END",
            db=DB_NAME,
        )
        try:
            yield
        finally:
            self.query("DROP TRIGGER IF EXISTS refuse_first_ending", db=DB_NAME)

    @staticmethod
    def seconds_until(column: str) -> str:
        """SQL for the seconds from the server's now until *column* (a moment)."""
        return f"TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), {column}) / 1e6"

    def reset(self) -> None:
        """Undo what tests reconfigure."""
        self.set_wait_timeout(28800)


def migrate(server: MariaDB) -> None:
    """Create the test database and run every migration into it."""
    dbserver.migrate(
        server, f"CREATE DATABASE IF NOT EXISTS {DB_NAME} CHARACTER SET utf8mb4", server.url()
    )
