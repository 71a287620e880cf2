"""Everything a run needs, started from a temporary directory and stopped at the end.

A throwaway ``mariadbd`` (``tests/harness/mariadb.py``) with the demo schema and
:data:`ROWS` products, and one process (or process tree) per server. The
machine's shared MariaDB is never touched; Celery and huey use Redis database
numbers of their own (13 and 14), flushed before use. The task benchmark's RQ
runs on database 14 too, flushed before each use, once huey is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from tests.harness.mariadb import MariaDB

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DB_NAME = "bench"
ROWS = 1000
REDIS_HOST = "127.0.0.1"
CELERY_REDIS_DB = 13
HUEY_REDIS_DB = 14
# RQ's database in the task benchmark: huey's, which runs only before it.
RQ_REDIS_DB = HUEY_REDIS_DB


class Stack:
    """The temporary directory, the database and the server processes of one run."""

    def __init__(self, keep: bool = False) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="socketsvc-bench-"))
        self.keep = keep
        # Sized as a server is, not as the suite's throwaway ones (whose 8 MB redo log makes
        # writing 10,000 rows at once a stream of checkpoints).
        self.db = MariaDB(
            self.base / "mariadb",
            ("--innodb-buffer-pool-size=256M", "--innodb-log-file-size=256M"),
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    # -- database ----------------------------------------------------------

    def start_database(self) -> list[int]:
        """Start mariadbd, migrate the demo schema, insert the rows; return their primary keys."""
        self.db.install()
        self.db.start()
        self.db.query(f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=REPO,
            env=self.env(),
            check=True,
            timeout=300,
        )
        values = ", ".join(
            f"('BENCH-{i:04d}', 'Benchmark product {i}', {i % 50}, 5, 20)" for i in range(ROWS)
        )
        insert = (
            "INSERT INTO shop_product (sku, name, stock, reorder_level, reorder_quantity) VALUES "
        )
        self.db.query(insert + values, db=DB_NAME)
        rows = self.db.query("SELECT id FROM shop_product WHERE sku LIKE 'BENCH-%'", db=DB_NAME)
        return [int(row[0]) for row in rows]

    def kill_db_sessions(self) -> int:
        """KILL every client session on the benchmark database; return how many."""
        return len(self.db.kill_sessions(DB_NAME))

    def set_wait_timeout(self, seconds: int) -> None:
        """Set the server's global wait_timeout (sessions opened afterwards get it)."""
        self.db.set_wait_timeout(seconds)

    # -- servers -----------------------------------------------------------

    def env(
        self, conn_max_age: int = 0, check_after_idle: float = 1.0, health_checks: bool = False
    ) -> dict[str, str]:
        """Return the environment of a server with this connection policy."""
        return {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": self.db.url(DB_NAME),
            "BENCH_CONN_MAX_AGE": str(conn_max_age),
            "BENCH_DB_CHECK_AFTER_IDLE": str(check_after_idle),
            "BENCH_CONN_HEALTH_CHECKS": "1" if health_checks else "0",
            "BENCH_CELERY_REDIS": f"redis://{REDIS_HOST}:6379/{CELERY_REDIS_DB}",
            "BENCH_HUEY_REDIS_DB": str(HUEY_REDIS_DB),
            "BENCH_RQ_REDIS_DB": str(RQ_REDIS_DB),
        }

    def socket_path(self, name: str) -> str:
        """Return the path of a server's socket."""
        return str(self.base / f"{name}.sock")

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start one server process (its own session, its output in ``<name>.log``)."""
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop())
        self._logs.append(log)
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        """Return the end of a server's log."""
        text = (self.base / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def flush_redis(self, dbs: tuple[int, ...] = (CELERY_REDIS_DB, HUEY_REDIS_DB)) -> None:
        """Empty the Redis databases Celery, huey and RQ use (never any other)."""
        for db in dbs:
            if db not in (CELERY_REDIS_DB, HUEY_REDIS_DB):
                raise ValueError(f"Redis database {db} is not the benchmark's")
            subprocess.run(
                ["redis-cli", "-h", REDIS_HOST, "-n", str(db), "FLUSHDB"],
                check=True,
                capture_output=True,
                timeout=10,
            )

    def stop_servers(self, names: list[str] | None = None) -> None:
        """Stop these servers (all by default): SIGTERM, then SIGKILL; their logs stay."""
        chosen = {n: p for n, p in self.processes.items() if names is None or n in names}
        for process in chosen.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in chosen.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # The whole session: gunicorn's and celery's children too.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        for name in chosen:
            del self.processes[name]

    def stop(self) -> None:
        """Stop every server, then the database; remove the directory."""
        self.stop_servers()
        for log in self._logs:
            log.close()
        self.db.stop()
        if not self.keep:
            subprocess.run(["rm", "-rf", str(self.base)], check=False)


def rss_kib(pid: int) -> int:
    """Return the resident set of *pid* and all its descendants, in KiB."""
    total = 0
    for member in [pid, *_descendants(pid)]:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def largest_rss_kib(pid: int) -> int:
    """Return the largest resident set among *pid* and its descendants, in KiB."""
    return max(rss_kib_of(member) for member in [pid, *_descendants(pid)])


def rss_kib_of(pid: int) -> int:
    """Return the resident set of *pid* alone, in KiB (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ns(pid: int) -> int:
    """Return the CPU time *pid*, its threads and its descendants ran, in ns (schedstat)."""
    total = 0
    for member in [pid, *_descendants(pid)]:
        try:
            threads = list(Path(f"/proc/{member}/task").iterdir())
        except FileNotFoundError:
            continue
        for thread in threads:
            try:
                total += int((thread / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
    return total


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) *pid* and all its descendants used so far."""
    ticks = 0
    for member in [pid, *_descendants(pid)]:
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat.rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # The command name may hold spaces and parentheses: split after the last ")".
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
