"""Enqueueing many tasks at once: ``enqueue_many()`` against one ``enqueue()`` at a time.

    .venv/bin/python -m bench.bulk            # MariaDB (a throwaway server) and PostgreSQL
    .venv/bin/python -m bench.bulk --docs docs  # and put the table into docs/benchmarks.md

Per database, in a fresh Django process (``--probe``): the time of
``enqueue_many()`` of 10,000 tasks (the task benchmark's ``lookup``; one
transaction, best of three), of the ORM's own ``bulk_create()`` of the same
10,000 rows, and of 1,000 ``enqueue()`` calls one after the other, beside
django-tasks-db's ``enqueue()`` (it has no bulk call). The PostgreSQL figures
use the local server at 127.0.0.1:5432 (a database of their own, dropped after).
``python -m bench`` (the full run, and ``--tasks-only``) runs it too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.probe import REPO, run_json, standalone
from tests.harness.docpage import put_section

BULK = 10_000
ONE_BY_ONE = 1_000
ROUNDS = 3
PG_DB = "socketsvc_bench_bulk"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_DB}"
BEGIN, END = "<!-- bench:bulk -->", "<!-- /bench:bulk -->"


def _timed(action: Any) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def probe() -> dict[str, float]:
    """Measure in this (Django) process; return seconds per figure."""
    import django

    django.setup()
    from django.db import transaction
    from django.utils import timezone

    from bench.tasks_app import lookup as noop
    from socketsvc.models import TaskRecord
    from socketsvc.tasks import enqueue_many, store

    calls = [([n], {}) for n in range(BULK)]
    figures: dict[str, list[float]] = {"enqueue_many": [], "bulk_create": [], "enqueue": []}
    for _ in range(ROUNDS):
        figures["enqueue_many"].append(_timed(lambda: enqueue_many(noop, calls)))
        TaskRecord.objects.all().delete()
        now = timezone.now()
        rows = [
            store.new_record(
                task_path=noop.module_path,
                queue_name=noop.queue_name,
                backend_name="default",
                priority=0,
                args=[n],
                kwargs={},
                run_after=None,
                max_attempts=1,
                now=now,
            )
            for n in range(BULK)
        ]

        def floor(rows: list[Any] = rows) -> None:
            with transaction.atomic():
                TaskRecord.objects.bulk_create(rows, batch_size=1000)

        figures["bulk_create"].append(_timed(floor))
        TaskRecord.objects.all().delete()
    figures["enqueue"].append(_timed(lambda: [noop.enqueue(n) for n in range(ONE_BY_ONE)]))
    TaskRecord.objects.all().delete()
    return {name: min(values) for name, values in figures.items()}


def probe_db_worker() -> dict[str, float]:
    """django-tasks-db's enqueue(), one call at a time (it has no bulk call)."""
    import django

    django.setup()
    from django_tasks_db.models import DBTaskResult

    from bench.tasks_app import lookup as noop

    took = _timed(lambda: [noop.enqueue(n) for n in range(ONE_BY_ONE)])
    DBTaskResult.objects.all().delete()
    return {"enqueue": took}


def _run_probe(env: dict[str, str], which: str) -> dict[str, float]:
    return dict(run_json(["bench.bulk", "--probe", which], env, f"the {which} probe"))


def _migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=300
    )


def measure(url: str, base_env: dict[str, str]) -> dict[str, Any]:
    """Return the figures of one database (its schema migrated first)."""
    ours = {**base_env, "DATABASE_URL": url, "BENCH_TASKS": "socketsvc"}
    theirs = {**base_env, "DATABASE_URL": url, "BENCH_TASKS": "db"}
    _migrate(ours)
    _migrate(theirs)
    return {"socketsvc": _run_probe(ours, "socketsvc"), "db_worker": _run_probe(theirs, "db")}


def run(mariadb_url: str, base_env: dict[str, str]) -> dict[str, Any]:
    """Measure on MariaDB (*mariadb_url*) and on the local PostgreSQL."""
    import psycopg

    results = {"MariaDB": measure(mariadb_url, base_env)}
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as pg:
        pg.execute(f"DROP DATABASE IF EXISTS {PG_DB}")
        pg.execute(f"CREATE DATABASE {PG_DB}")
        try:
            results["PostgreSQL"] = measure(PG_URL, base_env)
        finally:
            pg.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    return results


def text(results: dict[str, Any]) -> str:
    """Return the table."""
    lines = [
        f"| database | `enqueue_many()` of {BULK:,} | ORM `bulk_create()` of the same rows | "
        f"ratio | {ONE_BY_ONE:,} `enqueue()` calls, one at a time | django-tasks-db, "
        f"{ONE_BY_ONE:,} `enqueue()` |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        ours, theirs = figures["socketsvc"], figures["db_worker"]
        lines.append(
            f"| {name} | {ours['enqueue_many']:.3f} s "
            f"({BULK / ours['enqueue_many']:,.0f} tasks/s) | {ours['bulk_create']:.3f} s | "
            f"{ours['enqueue_many'] / ours['bulk_create']:.2f}x | "
            f"{ours['enqueue']:.2f} s ({ours['enqueue'] / ONE_BY_ONE * 1000:.2f} ms each) | "
            f"{theirs['enqueue']:.2f} s ({theirs['enqueue'] / ONE_BY_ONE * 1000:.2f} ms each) |"
        )
    return "\n".join(lines)


def section(results: dict[str, Any]) -> str:
    """Return the section of benchmarks.md."""
    return (
        f"{BEGIN}\n## Bulk enqueue\n\n"
        f"`socketsvc.tasks.enqueue_many()` stores {BULK:,} tasks in one transaction (`COPY` on "
        "PostgreSQL, multi-row INSERTs on MySQL/MariaDB; one wake-up), against the ORM's own "
        "`bulk_create()` of the "
        f"same rows and against {ONE_BY_ONE:,} `enqueue()` calls one after the other; best of "
        f"{ROUNDS}, in one Django process, measured by `python -m bench.bulk`.\n\n"
        f"{text(results)}\n{END}"
    )


def write_section(results: dict[str, Any], docs: Path) -> None:
    """Put the section into ``benchmarks.md`` (replacing the old one)."""
    put_section(docs / "benchmarks.md", section(results), BEGIN, END, "Benchmarks")


def main(argv: list[str] | None = None) -> int:
    """Run the bulk benchmark alone (or, with --probe, one measuring process)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bulk", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--probe", choices=("socketsvc", "db"), help=argparse.SUPPRESS)
    parser.add_argument("--docs", metavar="DIR", help="put the table into DIR/benchmarks.md")
    options = parser.parse_args(argv)
    if options.probe:
        figures = probe() if options.probe == "socketsvc" else probe_db_worker()
        print(json.dumps(figures))
        return 0
    from bench.stack import DB_NAME

    return standalone(
        lambda stack: run(
            stack.db.url(DB_NAME),
            {**stack.env(), "SOCKETSVC_SOCKET": str(stack.base / "none.sock")},
        ),
        text,
        write_section,
        options.docs,
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.exit(main())
