"""A throwaway PostgreSQL server in a temporary directory, on a private Unix socket.

The twin of :mod:`tests.harness.mariadb`: the same methods, so one fault test runs on
both. ``initdb`` and ``postgres`` refuse to run as root, so when the suite
runs as root they run as the ``postgres`` user, in a directory it owns. The
machine's shared PostgreSQL (port 5432) is never touched: the server listens
on no TCP port, only on a socket in its own directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from tests.harness import dbserver
from tests.harness.dbserver import ThrowawayServer
from tests.harness.waiting import poll

DB_NAME = "socketsvc_test"
SUPERUSER = "postgres"
# Quick to start and to stop; durability is not what these servers are for.
SERVER_SETTINGS = {
    "listen_addresses": "",
    "max_connections": "200",
    "shared_buffers": "16MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
}


def bindir() -> Path:
    """Return the directory of ``initdb`` and ``postgres``; fail loudly (never skip) if absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL's server binaries (initdb, postgres) not found: install Debian's "
        "postgresql package (make test does this when run as root)"
    )


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the postgres user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(SUPERUSER)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class PostgreSQL(ThrowawayServer):
    """One private server: data directory, socket directory and log under *base*."""

    program = "postgres"
    # Fast shutdown: sessions are terminated, as in a restart.
    stop_signal = signal.SIGINT
    not_answering = psycopg.OperationalError

    vendor = "postgresql"
    # What clients see, by SQLSTATE (tests.harness.mariadb has the same names).
    lost_codes = ("57P01", "08006")
    down_codes = ("08001", "08006", "57P01")
    refused_code = "08001"
    interrupted_code = "57014"
    idle_dropped_codes = ("57P05", "08006")
    # A connect refused to a role that may not log in, and by an unknown database.
    locked_code = "28000"
    unknown_database_code = "3D000"
    code_label = "SQLSTATE"

    def __init__(self, base: Path) -> None:
        super().__init__(base, base / "server.log")
        self.datadir = base / "data"
        self.socket_dir = str(base)
        self.socket = str(base / ".s.PGSQL.5432")

    # -- life cycle --------------------------------------------------------

    def _own(self) -> None:
        """Give the base directory to the user the server runs as."""
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            for path in (self.base, *self.base.rglob("*")):
                os.lchown(path, user.pw_uid, user.pw_gid)

    def install(self) -> None:
        """Create an empty cluster whose local connections are trusted."""
        binaries = bindir()
        self.base.mkdir(parents=True, exist_ok=True)
        self._own()
        subprocess.run(
            [
                str(binaries / "initdb"),
                f"--pgdata={self.datadir}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            **_run_as(),
        )

    def copy_from(self, template: PostgreSQL) -> None:
        """Start from a copy of a stopped template's data directory."""
        self.base.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(template.datadir), str(self.datadir)], check=True)
        self._own()

    def launch(self) -> subprocess.Popen[bytes]:
        """Start postgres on the private socket directory (as the postgres user under root)."""
        settings = {**SERVER_SETTINGS, "unix_socket_directories": self.socket_dir}
        options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(
                [str(bindir() / "postgres"), "-D", str(self.datadir), *options],
                stdout=log,
                stderr=log,
                start_new_session=True,
                **_run_as(),
            )

    # -- talking to it -----------------------------------------------------

    def query(self, sql: str, args: Any = None, db: str | None = None) -> list[tuple[Any, ...]]:
        """Run *sql* on a side connection of its own (never the daemon's)."""
        with psycopg.connect(
            host=self.socket_dir, user=SUPERUSER, dbname=db or "postgres", autocommit=True
        ) as conn:
            cursor = conn.execute(sql, args)
            return list(cursor.fetchall()) if cursor.description else []

    def url(self, db: str = DB_NAME, user: str = SUPERUSER, password: str = "") -> str:
        """Return a DATABASE_URL in the Unix-socket form (local connections are trusted, so
        a password is never checked)."""
        login = f"{user}:{password}" if password else user
        return f"postgres://{login}@{quote(self.socket_dir, safe='')}/{db}"

    def add_login(self, name: str, password: str, max_connections: int = -1) -> None:
        """Create a role with every right on the test database (and a connection cap)."""
        self.query(
            f"CREATE ROLE {name} LOGIN PASSWORD '{password}' CONNECTION LIMIT {int(max_connections)}"
        )
        for grant in (
            f"GRANT ALL ON DATABASE {DB_NAME} TO {name}",
            f"GRANT ALL ON SCHEMA public TO {name}",
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}",
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name}",
        ):
            self.query(grant, db=DB_NAME)

    def allow_login(self, name: str, allowed: bool) -> None:
        """Let a role log in, or not (its open sessions stay)."""
        self.query(f"ALTER ROLE {name} {'LOGIN' if allowed else 'NOLOGIN'}")

    def connect_as(self, name: str, password: str) -> Any:
        """Open a session as *name* (held by the test until it closes it)."""
        return psycopg.connect(host=self.socket_dir, user=name, dbname=DB_NAME, autocommit=True)

    def sessions(self, db: str = DB_NAME) -> list[tuple[int, str]]:
        """Return (pid, command) of the client sessions on *db*, other than this query's own.

        The command uses MariaDB's words, so tests read both alike: "Query"
        while a statement runs, "Sleep" otherwise.
        """
        rows = self.query(
            "SELECT pid, state FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            [db],
        )
        return [(int(pid), "Query" if state == "active" else "Sleep") for pid, state in rows]

    def kill_session(self, session_id: int) -> bool:
        """Terminate one session and wait until it has ended; False if it had already ended.

        ``pg_terminate_backend`` only signals the backend, which then sends its
        client the error and closes; MariaDB's KILL has closed the session when
        it returns, and tests expect that.
        """
        if not self.query("SELECT pg_terminate_backend(%s)", [session_id])[0][0]:
            return False
        poll(
            lambda: not self.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [session_id]),
            10,
            interval=0.01,
            why=lambda: f"session {session_id} did not end",
        )
        return True

    def kill_query(self, session_id: int) -> None:
        """Cancel the statement a session runs (``pg_cancel_backend``), keeping the session."""
        self.query("SELECT pg_cancel_backend(%s)", [session_id])

    def kill_sessions(self, db: str = DB_NAME) -> list[int]:
        """Terminate every client session on *db*; return their pids."""
        return [pid for pid, _ in self.sessions(db) if self.kill_session(pid)]

    def set_wait_timeout(self, seconds: int) -> None:
        """Drop sessions idle for *seconds*, in or out of a transaction (0: never).

        ``idle_session_timeout`` and ``idle_in_transaction_session_timeout``
        together are PostgreSQL's ``wait_timeout``. Returns once a new session
        sees the value (a reload reaches the postmaster asynchronously).
        """
        value = f"{int(seconds)}s"
        for name in ("idle_session_timeout", "idle_in_transaction_session_timeout"):
            self.query(f"ALTER SYSTEM SET {name} = '{value}'")
        self.query("SELECT pg_reload_conf()")
        want = "0" if seconds == 0 else value
        poll(
            lambda: self.query("SHOW idle_session_timeout")[0][0] == want,
            10,
            why=lambda: f"idle_session_timeout did not become {want}",
        )

    @staticmethod
    def quote(name: str) -> str:
        """Quote an identifier (``key`` is a reserved word on MariaDB; quoted alike here)."""
        return f'"{name}"'

    @staticmethod
    def as_text(expression: str) -> str:
        """SQL that reads *expression* (a JSON column, say) as text."""
        return f"CAST({expression} AS TEXT)"

    @contextlib.contextmanager
    def holding_row_lock(self, table: str, row_id: str) -> Iterator[None]:
        """Hold *table*'s row *row_id* locked (SELECT ... FOR UPDATE) from a session of its own."""
        with psycopg.connect(host=self.socket_dir, user=SUPERUSER, dbname=DB_NAME) as conn:
            conn.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [row_id])
            yield
            conn.rollback()

    @contextlib.contextmanager
    def refusing_first_endings(self) -> Iterator[None]:
        """A trigger refuses to end a task (SUCCESSFUL or FAILED) on its first claim."""
        self.query(
            "CREATE FUNCTION refuse_first_ending() RETURNS trigger AS $$ BEGIN "
            "IF NEW.status IN ('SUCCESSFUL', 'FAILED') AND OLD.claims = 1 THEN "
            "RAISE EXCEPTION 'refused on purpose'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            db=DB_NAME,
        )
        self.query(
            "CREATE TRIGGER refuse_first_ending BEFORE UPDATE ON socketsvc_task FOR EACH ROW "
            "EXECUTE FUNCTION refuse_first_ending()",
            db=DB_NAME,
        )
        try:
            yield
        finally:
            self.query("DROP TRIGGER IF EXISTS refuse_first_ending ON socketsvc_task", db=DB_NAME)
            self.query("DROP FUNCTION IF EXISTS refuse_first_ending()", db=DB_NAME)

    @staticmethod
    def seconds_until(column: str) -> str:
        """SQL for the seconds from the server's now until *column* (a moment)."""
        return f"EXTRACT(EPOCH FROM ({column} - NOW()))"

    def reset(self) -> None:
        """Undo what tests reconfigure."""
        self.set_wait_timeout(0)


def migrate(server: PostgreSQL) -> None:
    """Create the test database and run every migration into it."""
    dbserver.migrate(server, f"CREATE DATABASE {DB_NAME} ENCODING 'UTF8'", server.url())
