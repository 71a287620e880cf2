"""Benchmark socketsvc against the Python floor, gunicorn, Celery and huey, in one run.

    .venv/bin/python -m bench               # full run: prints the tables, writes docs/
    .venv/bin/python -m bench --smoke       # seconds: socketsvc and the floor only, writes nothing
    .venv/bin/python -m bench --tasks-only  # the task benchmark alone; --docs: its section only

Every server does the same unit of work (one product by primary key through
the ORM on a throwaway MariaDB, its name back), each client is a process of its
own, and the rounds are interleaved so drift hits every server alike. Each
figure is the median over the rounds. Then the same work as a background task:
socketsvc's task runner against django-tasks-db's db_worker and RQ
(:mod:`bench.taskbench`; the smoke run measures socketsvc alone, on a few tasks).
Then how fast each system drains a prefilled queue (:mod:`bench.drain`; not in
the smoke run). Last, what the daemon's metrics and tracing cost per call
(:mod:`bench.observing`; the smoke run: one round, a few calls).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import bulk, drain, fanin, hotpath, observing, report, taskbench, taskreport
from bench.goals import socketsvc_clean, tasks_clean
from bench.measure import dead_connections, measure_idle_connections, run_rounds
from bench.model import FULL, SMOKE, Plan, Results, TaskResults
from bench.servers import start_servers, wait_ready
from bench.stack import DB_NAME, Stack

# The targets whose failed requests after dead DB sessions are counted.
DEAD_CONNECTION_TARGETS = (
    "bare-orm",
    "bare-orm-60",
    "socketsvc",
    "socketsvc-0",
    "socketsvc-pingall",
)
# What the full task benchmark needs besides socketsvc (the bench extra installs them).
TASK_MODULES = ("django_tasks_db", "django_tasks_rq", "django_rq", "rq")


def _require(plan: Plan) -> None:
    """Fail early, before anything starts, if the full run lacks a tool it needs."""
    if not plan.full:
        return
    if shutil.which("redis-cli") is None:
        raise SystemExit("redis-cli not found: the full run needs Redis on 127.0.0.1:6379")
    missing = [m for m in TASK_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: .venv/bin/pip install -e '.[bench]'")


def tasks_only(plan: Plan, docs: str | None, keep: bool, only: frozenset[str] | None) -> int:
    """Run the task benchmark alone; write its section of the docs only if *docs* is given."""
    stack = Stack(keep=keep)
    try:
        print(f"starting MariaDB in {stack.base}", flush=True)
        stack.start_database()
        tasks = taskbench.run(stack, plan, only)
        print(taskreport.text(tasks))
        many = _bulk(stack, plan)
        chords = _fanin(stack, plan)
        drained = _drain(stack, plan)
        if docs is not None:
            taskreport.write_section(tasks, Path(docs))
            if many is not None:
                bulk.write_section(many, Path(docs))
            if chords is not None:
                fanin.write_section(chords, Path(docs))
            if drained is not None:
                drain.write_section(drained, Path(docs))
            print(f"wrote the task sections of {docs}/benchmarks.md and {taskreport.CHART}")
        return 0 if tasks_clean(tasks) else 1
    finally:
        stack.stop()


def _bulk(stack: Stack, plan: Plan) -> dict[str, Any] | None:
    """Measure bulk enqueue (not in the smoke run); print and return its figures."""
    if not plan.full:
        return None
    print("bulk enqueue", flush=True)
    env = {**stack.env(), "SOCKETSVC_SOCKET": stack.socket_path("bulk")}
    many = bulk.run(stack.db.url(DB_NAME), env)
    print(bulk.text(many))
    return many


def _fanin(stack: Stack, plan: Plan) -> dict[str, Any] | None:
    """Measure a chord's fan-in (not in the smoke run); print and return its figures."""
    if not plan.full:
        return None
    print("workflows: a chord's fan-in", flush=True)
    chords = fanin.run(stack.db.url(DB_NAME), stack.env(conn_max_age=60), stack.base)
    print(fanin.text(chords))
    return chords


def _drain(stack: Stack, plan: Plan) -> list[drain.Drained] | None:
    """Measure how fast each system drains a prefilled queue (not in the smoke run)."""
    if not plan.full:
        return None
    print("drain: a prefilled queue", flush=True)
    drained = drain.measure(stack, drain.COUNT)
    print(drain.table(drained))
    for line in drain.verdicts(drained):
        print(line)
    return drained


def _observing(stack: Stack, plan: Plan, ids: list[int]) -> observing.Observed:
    """Measure what metrics and tracing cost per call (the smoke run: one round, a few
    calls); print and return the figures."""
    print("observation: metrics and tracing", flush=True)
    observed = observing.run(stack, ids, observing.FULL if plan.full else observing.SMOKE)
    print(observing.text(observed))
    return observed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 if socketsvc failed a request or a task)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny counts, socketsvc and the floor only (tasks: socketsvc); writes nothing",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the hot-path profile")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument(
        "--tasks-only",
        action="store_true",
        help="only the task benchmark (with --smoke: socketsvc, a few tasks); "
        "writes nothing unless --docs is given",
    )
    parser.add_argument(
        "--task-systems",
        metavar="NAMES",
        help="with --tasks-only: measure only these systems (comma-separated: socketsvc, "
        "db_worker, db_worker-0, rq, rq-simple)",
    )
    parser.add_argument(
        "--docs",
        nargs="?",
        const=str(report.DOCS),
        default=None,
        metavar="DIR",
        help=f"where benchmarks.md and the charts go (default {report.DOCS}; "
        "the full run always writes, --tasks-only only with this option)",
    )
    options = parser.parse_args(argv)
    plan = SMOKE if options.smoke else FULL
    _require(plan)
    if options.tasks_only:
        only = frozenset(options.task_systems.split(",")) if options.task_systems else None
        return tasks_only(plan, options.docs, options.keep, only)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = plan.idle_connections + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    started = time.monotonic()
    load_at_start = os.getloadavg()
    stack = Stack(keep=options.keep)
    try:
        print(f"starting MariaDB and the servers in {stack.base}", flush=True)
        ids = stack.start_database()
        targets = start_servers(stack, plan.full)
        wait_ready(stack, targets, ids[0])
        run_rounds(stack, targets, ids, plan)
        by_name = {t.name: t for t in targets}
        print("idle connections", flush=True)
        idle = measure_idle_connections(stack, [by_name["floor"], by_name["socketsvc"]], ids, plan)
        print("dead connections", flush=True)
        resilience = dead_connections(
            stack, [by_name[n] for n in DEAD_CONNECTION_TARGETS], ids, plan
        )
        profile: dict[str, Any] | None = None
        if plan.full and not options.no_profile:
            print("profiling the hot path", flush=True)
            profile = hotpath.run(stack, by_name["socketsvc"], by_name["socketsvc-0"], ids)
        # The task systems run one at a time, on a machine the other servers left.
        stack.stop_servers()
        print("background tasks", flush=True)
        tasks: TaskResults = taskbench.run(stack, plan)
        elapsed = time.monotonic() - started
        results = Results(
            targets,
            idle,
            resilience,
            profile,
            plan.rounds,
            plan.latency_count,
            plan.throughput_seconds,
            plan.idle_connections,
            elapsed,
            load_at_start,
            tasks,
        )
        print(report.text(results))
        many = _bulk(stack, plan)
        chords = _fanin(stack, plan)
        drained = _drain(stack, plan)
        observed = _observing(stack, plan, ids)
        if plan.full:
            docs = options.docs or str(report.DOCS)
            mariadb = str(stack.db.query("SELECT VERSION()")[0][0])
            report.write(results, Path(docs), mariadb)
            if many is not None:
                bulk.write_section(many, Path(docs))
            if chords is not None:
                fanin.write_section(chords, Path(docs))
            if drained is not None:
                drain.write_section(drained, Path(docs))
            observing.write_section(observed, Path(docs))
            print(f"wrote {docs}/benchmarks.md, benchmarks.png and {taskreport.CHART}")
        clean = socketsvc_clean(results) and tasks_clean(tasks) and not observed.failures()
        return 0 if clean else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
