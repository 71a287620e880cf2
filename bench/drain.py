"""Drain: how fast a task system empties a queue filled before its workers start.

    .venv/bin/python -m bench.drain                  # 20,000 tasks each (several minutes)
    .venv/bin/python -m bench.drain --count 5000     # quicker
    .venv/bin/python -m bench.drain --docs docs      # and its section of docs/benchmarks.md

The queue ``bench`` is filled with COUNT no-op tasks (``bench.tasks_app.noop``)
while no worker runs, each system its own way (:mod:`bench.drainfill`); then
its workers start and a watcher counts what is left every 20 ms. The rate is
COUNT over the time from the first task taken to the last one finished. Each
system has two processes, the machine's two cores:

* ``socketsvc``: one daemon with ``--processes 2`` (2 task threads in each);
* ``db_worker-0``: two ``manage.py db_worker --interval 0`` (django-tasks-db);
* ``rq-simple``, ``rq``: two ``rqworker`` (SimpleWorker; RQ's default, which
  forks a work horse per job), on Redis, so measured once.

On a throwaway MariaDB and a throwaway PostgreSQL (the suite's servers), both
with the benchmark's connection settings. The targets (see the issue of the
same name in the project's tracker) are 3x ``db_worker --interval 0`` and at
least 1,500 tasks/s; a missed target is printed as missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.probe import run_json
from bench.servers import manage
from bench.stack import DB_NAME, REPO, RQ_REDIS_DB, Stack
from tests.harness.docpage import put_section

BEGIN, END = "<!-- bench:drain -->", "<!-- /bench:drain -->"
TARGET_RATIO, TARGET_RATE = 3.0, 1500.0
COUNT = 20_000
QUEUE = "bench"


@dataclass(frozen=True)
class System:
    name: str
    backend: str
    command: tuple[str, ...]
    processes: int


SYSTEMS = (
    System("socketsvc", "socketsvc", ("runsocketservice", "--processes", "2"), 1),
    System("db_worker-0", "db", ("db_worker", "--queue-name", QUEUE, "--interval", "0"), 2),
    System(
        "rq-simple",
        "rq",
        (
            "rqworker",
            QUEUE,
            "--job-class",
            "django_tasks_rq.Job",
            "--worker-class",
            "rq.worker.SimpleWorker",
        ),
        2,
    ),
    System("rq", "rq", ("rqworker", QUEUE, "--job-class", "django_tasks_rq.Job"), 2),
)
_TABLES = {"socketsvc": "socketsvc_task", "db": "django_tasks_database_dbtaskresult"}


@dataclass
class Drained:
    system: str
    vendor: str
    count: int
    fill_seconds: float
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def _env(stack: Stack, url: str, system: System) -> dict[str, str]:
    return {
        **stack.env(conn_max_age=60, health_checks=True),
        "DATABASE_URL": url,
        "BENCH_TASKS": system.backend,
        "BENCH_TASK_WORKERS": "2",
        "SOCKETSVC_SOCKET": stack.socket_path("drain"),
    }


def _migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=REPO,
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stderr[-3000:]}")


@dataclass(frozen=True)
class Database:
    """Where a drain runs: its name, its DATABASE_URL, a way to send it SQL."""

    vendor: str
    url: str
    query: Any


def drain(stack: Stack, database: Database, system: System, count: int) -> Drained:
    """Fill the queue, start the system's workers, wait until they emptied it."""
    env = _env(stack, database.url, system)
    if system.backend == "rq":
        stack.flush_redis((RQ_REDIS_DB,))
    else:
        database.query(f"DELETE FROM {_TABLES[system.backend]}")  # noqa: S608 (our names)
    filled = run_json(["bench.drainfill", "fill", str(count)], env, f"filling {system.name}")
    names = [f"drain-{system.name}-{n}" for n in range(system.processes)]
    for name in names:
        stack.spawn(name, manage(*system.command), env)
    try:
        watched = run_json(["bench.drainfill", "watch", str(count)], env, f"{system.name} draining")
    except RuntimeError as exc:
        logs = "\n".join(f"--- {n}\n{stack.log_tail(n)}" for n in names)
        raise RuntimeError(f"{exc}\n{logs}") from None
    finally:
        stack.stop_servers(names)
    return Drained(system.name, database.vendor, count, filled["seconds"], watched["seconds"])


def measure(stack: Stack, count: int, systems: tuple[System, ...] = SYSTEMS) -> list[Drained]:
    """Every system on MariaDB, the database-backed ones on PostgreSQL too (RQ once)."""
    from tests.harness.postgres import PostgreSQL

    results: list[Drained] = []
    mariadb = Database(
        "MariaDB", stack.db.url(DB_NAME), lambda sql: stack.db.query(sql, db=DB_NAME)
    )
    for system in systems:
        if system.backend == "db":
            _migrate(_env(stack, mariadb.url, system))
        results.append(drain(stack, mariadb, system, count))
        print(text_row(results[-1]), flush=True)
    base = Path(tempfile.mkdtemp(prefix="socketsvc-drain-pg-"))
    base.chmod(0o755)  # the server runs as the postgres user
    postgres = PostgreSQL(base / "pg")
    try:
        postgres.install()
        postgres.start()
        postgres.query(f"CREATE DATABASE {DB_NAME} ENCODING 'UTF8'")
        pg = Database(
            "PostgreSQL", postgres.url(DB_NAME), lambda sql: postgres.query(sql, db=DB_NAME)
        )
        for system in systems:
            if system.backend == "rq":
                continue
            _migrate(_env(stack, pg.url, system))
            results.append(drain(stack, pg, system, count))
            print(text_row(results[-1]), flush=True)
    finally:
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)
    return results


def text_row(result: Drained) -> str:
    return (
        f"  {result.vendor:<10} {result.system:<12} {result.count} tasks in "
        f"{result.seconds:6.2f} s: {result.rate:7.0f} tasks/s "
        f"(filled in {result.fill_seconds:.1f} s)"
    )


def verdicts(results: list[Drained]) -> list[str]:
    """One line per database: socketsvc against the targets."""
    lines = []
    for vendor in dict.fromkeys(r.vendor for r in results):
        ours = next((r for r in results if r.vendor == vendor and r.system == "socketsvc"), None)
        peer = next((r for r in results if r.vendor == vendor and r.system == "db_worker-0"), None)
        if ours is None or peer is None or not peer.rate:
            continue
        ratio = ours.rate / peer.rate
        met = ratio >= TARGET_RATIO and ours.rate >= TARGET_RATE
        lines.append(
            f"{vendor}: socketsvc {ours.rate:.0f} tasks/s, {ratio:.2f}x db_worker --interval 0 "
            f"(targets: ≥ {TARGET_RATIO:g}x and ≥ {TARGET_RATE:,.0f}/s): "
            f"{'met' if met else 'missed'}"
        )
    return lines


def table(results: list[Drained]) -> str:
    rows = [
        "| database | system | tasks | seconds | tasks/s |",
        "|---|---|---|---|---|",
        *(
            f"| {r.vendor} | {r.system} | {r.count:,} | {r.seconds:.2f} | {r.rate:,.0f} |"
            for r in results
        ),
    ]
    return "\n".join(rows)


def write_section(results: list[Drained], docs: Path) -> None:
    intro = (
        "## Drain: a prefilled queue\n\n"
        f"{results[0].count:,} no-op tasks enqueued while no worker runs, then the workers "
        "start: tasks/s from the first task taken to the last one finished (a watcher counts "
        "what is left every 20 ms). Two processes each: socketsvc's daemon with "
        "`--processes 2` (2 task threads in each), two `db_worker --interval 0`, two "
        "`rqworker` (SimpleWorker, and RQ's default). Throwaway MariaDB and PostgreSQL on "
        f"this machine ({os.cpu_count()} CPUs). Measured by `python -m bench.drain`.\n"
    )
    body = "\n\n".join([intro, table(results), "\n".join(f"- {v}" for v in verdicts(results))])
    put_section(docs / "benchmarks.md", f"{BEGIN}\n{body}\n{END}", BEGIN, END, "Benchmarks")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--docs", help="write the section into DIR/benchmarks.md")
    parser.add_argument("--only", help="comma-separated systems (default: all)")
    options = parser.parse_args(argv)
    chosen = SYSTEMS
    if options.only:
        names = set(options.only.split(","))
        chosen = tuple(s for s in SYSTEMS if s.name in names)
    stack = Stack()
    try:
        print(f"starting MariaDB in {stack.base}", flush=True)
        stack.start_database()
        results = measure(stack, options.count, chosen)
    finally:
        stack.stop()
    print(table(results))
    for line in verdicts(results):
        print(line)
    if options.docs:
        write_section(results, Path(options.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
