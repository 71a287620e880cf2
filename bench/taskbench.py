"""The task benchmark: each task system's workers started in turn, the producers run against them.

Every system runs the same task (:mod:`bench.tasks_app`) on the same
throwaway MariaDB as the RPC benchmark, with the demo's connection settings
(``CONN_MAX_AGE=60`` with ``CONN_HEALTH_CHECKS``), and two concurrent task
executors, one per core of the 2-core machine the figures are published for
(socketsvc's default ``TASK_WORKERS=2``):

* ``socketsvc``: one ``manage.py runsocketservice`` daemon, 2 task threads,
  woken over its socket by every enqueue; ``socketsvc-2p`` the same with
  ``--processes 2`` (2 task threads in each worker process);
* ``db_worker``, ``db_worker-0``: two ``manage.py db_worker`` processes
  (django-tasks-db; one task at a time each) with the default ``--interval``
  (1 s) and with ``--interval 0``;
* ``rq``, ``rq-simple``: two ``manage.py rqworker`` processes (django-tasks-rq's
  job class, Redis database 14): RQ's default worker, which forks a work horse
  per job, and ``rq.worker.SimpleWorker``, which does not.

Only one system runs at a time (``--interval 0`` workers poll without pause,
and would eat the cores the others are measured on): per round and system,
its task table or Redis database is emptied, its workers start, the
producers (:mod:`bench.producers`, a process with the system's settings)
probe, measure and report, and the workers stop. Rounds rotate the order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.model import Plan, TaskResults, TaskSystem, percentile
from bench.servers import manage
from bench.stack import DB_NAME, REPO, RQ_REDIS_DB, Stack, cpu_seconds

QUEUE = "bench"
WORKERS = 2
# Seconds the idle workers' CPU use is measured over, after the producers are done.
IDLE_SECONDS = 2.0
# The rows each system writes its tasks to (emptied before each measurement).
_TABLES = {"socketsvc": "socketsvc_task", "db": "django_tasks_database_dbtaskresult"}


def systems(full: bool) -> list[TaskSystem]:
    """Return the systems of a run: socketsvc alone for the smoke run, else every one."""
    found = [
        TaskSystem(
            "socketsvc",
            "socketsvc daemon (runsocketservice), woken over its socket",
            "socketsvc",
            f"{WORKERS} threads (TASK_WORKERS) in 1 process",
        )
    ]
    if full:
        found += [
            TaskSystem(
                "socketsvc-2p",
                "socketsvc daemon with --processes 2, woken over its socket",
                "socketsvc",
                f"{WORKERS} threads (TASK_WORKERS) in each of 2 worker processes",
            ),
            TaskSystem(
                "db_worker",
                "django-tasks-db db_worker, default --interval (1 s)",
                "db",
                f"{WORKERS} processes",
                poll=1.0,
            ),
            TaskSystem(
                "db_worker-0",
                "django-tasks-db db_worker --interval 0",
                "db",
                f"{WORKERS} processes",
                note="polls without pause while idle",
            ),
            TaskSystem(
                "rq",
                "RQ rqworker, default worker (forks a work horse per job)",
                "rq",
                f"{WORKERS} processes",
            ),
            TaskSystem(
                "rq-simple",
                "RQ rqworker --worker-class rq.worker.SimpleWorker",
                "rq",
                f"{WORKERS} processes",
                note="no fork per job; not RQ's default",
            ),
        ]
    return found


def _command(system: TaskSystem) -> list[str]:
    """Return the command line of one of the system's worker processes."""
    if system.backend == "socketsvc":
        processes = ["--processes", "2"] if system.name == "socketsvc-2p" else []
        return manage("runsocketservice", *processes)
    if system.backend == "db":
        interval = ["--interval", "0"] if system.poll == 0 else []
        return manage("db_worker", "--queue-name", QUEUE, *interval)
    worker = ["--worker-class", "rq.worker.SimpleWorker"] if system.name == "rq-simple" else []
    return manage("rqworker", QUEUE, "--job-class", "django_tasks_rq.Job", *worker)


def _processes(system: TaskSystem) -> int:
    """Return how many worker processes the system runs (socketsvc: threads in one)."""
    return 1 if system.backend == "socketsvc" else WORKERS


def env(stack: Stack, system: TaskSystem) -> dict[str, str]:
    """Return the environment of the system's workers and producers."""
    return {
        **stack.env(conn_max_age=60, health_checks=True),
        "BENCH_TASKS": system.backend,
        "BENCH_TASK_WORKERS": str(WORKERS),
        "SOCKETSVC_SOCKET": stack.socket_path("tasks"),
    }


def prepare(stack: Stack, chosen: list[TaskSystem]) -> None:
    """Create the tables of the systems that store tasks in tables of their own."""
    for system in chosen:
        if system.backend == "db":
            done = subprocess.run(
                manage("migrate", "-v0"),
                cwd=REPO,
                env=env(stack, system),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"migrating django-tasks-db failed:\n{done.stderr[-4000:]}")
            return


def _reset(stack: Stack, system: TaskSystem) -> None:
    """Empty the system's task table, or its Redis database."""
    if system.backend == "rq":
        stack.flush_redis((RQ_REDIS_DB,))
    else:
        stack.db.query(f"TRUNCATE TABLE {_TABLES[system.backend]}", db=DB_NAME)


def measure(stack: Stack, system: TaskSystem, plan: Plan) -> None:
    """Start the system's workers, run the producers against them, record the figures."""
    _reset(stack, system)
    system_env = env(stack, system)
    names = [f"tasks-{system.name}-{n + 1}" for n in range(_processes(system))]
    for name in names:
        stack.spawn(name, _command(system), system_env)
    polled = system.poll >= 0.5
    count = plan.task_latency_count_polled if polled else plan.task_latency_count
    timeout = 300 + count * (system.poll + 0.5) + plan.task_count * len(plan.task_producers) * 0.1
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.producers",
                str(count),
                str(system.poll),
                str(plan.task_count),
                *(str(p) for p in plan.task_producers),
            ],
            cwd=REPO,
            env=system_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            logs = "\n".join(f"--- {n}.log\n{stack.log_tail(n)}" for n in names)
            raise RuntimeError(
                f"the producers against {system.name} failed:\n{done.stderr[-4000:]}\n{logs}"
            )
        system.add("idle_cpu", _idle_cpu(stack, names))
    finally:
        stack.stop_servers(names)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    latencies: list[float] = figures["latency_ms"]
    system.latencies += latencies
    system.enqueue_ms += figures["enqueue_ms"]
    if latencies:
        system.add("p50", percentile(latencies, 0.5))
    failed = figures["failed"]
    for each in figures["throughput"]:
        system.add(f"tps{each['producers']}", each["tasks_per_s"])
        failed += each["failed"]
    system.add("failures", failed)


def _idle_cpu(stack: Stack, names: list[str]) -> float:
    """Return the % of one core the idle workers and MariaDB use together (no task queued)."""
    pids = [stack.processes[name].pid for name in names]
    if stack.db.process is not None:
        pids.append(stack.db.process.pid)
    time.sleep(1.0)  # let the last writes settle
    before = sum(cpu_seconds(pid) for pid in pids)
    time.sleep(IDLE_SECONDS)
    return 100 * (sum(cpu_seconds(pid) for pid in pids) - before) / IDLE_SECONDS


def _progress(system: TaskSystem, producers: tuple[int, ...]) -> str:
    p50 = system.samples.get("p50", [0.0])[-1]
    rates = "".join(f"  {p}p {system.samples[f'tps{p}'][-1]:6.0f} tasks/s" for p in producers)
    return f"  {system.name:<12} enqueue -> started p50 {p50:8.2f} ms{rates}"


def run(stack: Stack, plan: Plan, only: frozenset[str] | None = None) -> TaskResults:
    """Measure every system of the plan (socketsvc alone unless *plan.full*), rounds interleaved.

    *only* names the systems to measure (default: all of the plan's).
    """
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    chosen = [system for system in systems(plan.full) if only is None or system.name in only]
    if not chosen:
        raise SystemExit(f"no task system named {', '.join(sorted(only or ()))}")
    prepare(stack, chosen)
    for round_no in range(plan.task_rounds):
        shift = round_no % len(chosen)
        print(f"tasks round {round_no + 1}/{plan.task_rounds}", flush=True)
        for system in chosen[shift:] + chosen[:shift]:
            measure(stack, system, plan)
            print(_progress(system, plan.task_producers), flush=True)
    if any(system.backend == "rq" for system in chosen):
        stack.flush_redis((RQ_REDIS_DB,))  # leave nothing of RQ's behind
    return TaskResults(
        chosen,
        plan.task_rounds,
        plan.task_latency_count,
        plan.task_latency_count_polled,
        plan.task_count,
        plan.task_producers,
        time.monotonic() - started,
        (load_at_start, os.getloadavg()[0]),
    )
