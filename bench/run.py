"""Benchmark socketsvc against the Python floor, gunicorn, Celery and huey, in one run.

    .venv/bin/python bench/run.py            # full run: prints the table, writes docs/
    .venv/bin/python bench/run.py --smoke    # seconds: socketsvc and the floor only, writes nothing

Every server does the same unit of work (one product by primary key through
the ORM on a throwaway MariaDB, its name back), each client is a process of its
own, and the rounds are interleaved so drift hits every server alike. Each
figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import resource
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.clients import (
    Endpoint,
    latency_client,
    make_caller,
    probe_client,
    throughput_client,
)
from bench.stack import BIN, Stack, rss_kib

CTX = multiprocessing.get_context("fork")


@dataclass
class Target:
    """One thing measured: a server process (or tree) and how to call it."""

    name: str
    label: str
    endpoint: Endpoint
    server: str
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, figure: str, value: float) -> None:
        """Record one round's value of a figure."""
        self.samples.setdefault(figure, []).append(value)

    def median(self, figure: str) -> float | None:
        """Return the median of a figure over the rounds, or None if never measured."""
        values = self.samples.get(figure)
        return statistics.median(values) if values else None


@dataclass
class Plan:
    """How much to measure."""

    rounds: int
    latency_count: int
    throughput_seconds: float
    clients: tuple[int, ...]
    idle_connections: int
    kill_cycles: int
    timeout_cycles: int
    full: bool


FULL = Plan(
    rounds=5,
    latency_count=600,
    throughput_seconds=1.5,
    clients=(1, 8),
    idle_connections=1000,
    kill_cycles=3,
    timeout_cycles=2,
    full=True,
)
SMOKE = Plan(
    rounds=1,
    latency_count=30,
    throughput_seconds=0.3,
    clients=(1, 8),
    idle_connections=100,
    kill_cycles=1,
    timeout_cycles=0,
    full=False,
)


# -- starting the servers ----------------------------------------------------


def _manage(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


def start_servers(stack: Stack, full: bool) -> list[Target]:
    """Start every server of the plan and return the targets, floor first."""
    sock = stack.socket_path
    bare = str(Path(__file__).resolve().parent / "bare_server.py")
    servers: list[tuple[str, list[str], dict[str, str]]] = [
        ("bare", [sys.executable, bare, "--socket", sock("bare")], stack.env()),
        ("bare-orm", [sys.executable, bare, "--orm", "--socket", sock("bare-orm")], stack.env()),
        (
            "bare-orm-60",
            [sys.executable, bare, "--orm", "--socket", sock("bare-orm-60")],
            stack.env(conn_max_age=60),
        ),
        (
            "socketsvc",
            _manage("runsocketservice", "--socket", sock("socketsvc")),
            stack.env(conn_max_age=60, health_checks=True),
        ),
        (
            "socketsvc-0",
            _manage("runsocketservice", "--socket", sock("socketsvc-0")),
            stack.env(conn_max_age=0),
        ),
        (
            "socketsvc-pingall",
            _manage("runsocketservice", "--socket", sock("socketsvc-pingall")),
            stack.env(conn_max_age=60, check_after_idle=0.0),
        ),
    ]
    # The demo's settings for every Django server the comparison runs.
    demo = stack.env(conn_max_age=60, health_checks=True)
    if full:
        stack.flush_redis()
        servers += [
            (
                "gunicorn",
                [
                    str(BIN / "gunicorn"),
                    "--bind",
                    f"unix:{sock('gunicorn')}",
                    "--workers",
                    "1",
                    "--worker-class",
                    "sync",
                    "--log-level",
                    "warning",
                    "bench.wsgi:application",
                ],
                demo,
            ),
            (
                "celery",
                [
                    str(BIN / "celery"),
                    "-A",
                    "bench.celery_app",
                    "worker",
                    "-P",
                    "solo",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "WARNING",
                ],
                demo,
            ),
            (
                "huey",
                [
                    str(BIN / "huey_consumer"),
                    "bench.huey_app.huey",
                    "--workers",
                    "1",
                    "--worker-type",
                    "thread",
                    "--quiet",
                ],
                demo,
            ),
        ]
    for name, argv, env in servers:
        stack.spawn(name, argv, env)
    targets = [
        Target(
            "floor",
            "bare selectors server, no DB (floor)",
            Endpoint("rpc", sock("bare"), "rpc.ping"),
            "bare",
        ),
        Target(
            "bare-orm",
            "bare server + ORM, CONN_MAX_AGE=0",
            Endpoint("rpc", sock("bare-orm")),
            "bare-orm",
            "connects per request",
        ),
        Target(
            "socketsvc",
            "socketsvc, demo defaults (CONN_MAX_AGE=60, CONN_HEALTH_CHECKS)",
            Endpoint("rpc", sock("socketsvc")),
            "socketsvc",
            "checks reused connections: socket poll, ping after 1 s idle",
        ),
        Target(
            "socketsvc-ping",
            "socketsvc rpc.ping",
            Endpoint("rpc", sock("socketsvc"), "rpc.ping"),
            "socketsvc",
        ),
        Target(
            "bare-orm-60",
            "bare server + ORM, CONN_MAX_AGE=60",
            Endpoint("rpc", sock("bare-orm-60")),
            "bare-orm-60",
            "no ping: fails once per dead connection",
        ),
        Target(
            "socketsvc-0",
            "socketsvc, CONN_MAX_AGE=0",
            Endpoint("rpc", sock("socketsvc-0")),
            "socketsvc-0",
            "connects per request",
        ),
        Target(
            "socketsvc-pingall",
            "socketsvc, CONN_MAX_AGE=60, DB_CHECK_AFTER_IDLE=0",
            Endpoint("rpc", sock("socketsvc-pingall")),
            "socketsvc-pingall",
            "pings every reused connection",
        ),
    ]
    if full:
        targets += [
            Target(
                "gunicorn",
                "gunicorn sync worker + Django view",
                Endpoint("http", sock("gunicorn")),
                "gunicorn",
                "demo DB settings, no middleware",
            ),
            Target(
                "celery",
                "Celery solo pool, Redis broker+backend",
                Endpoint("celery"),
                "celery",
                "demo DB settings (Celery closes them per task)",
            ),
            Target(
                "huey",
                "huey, Redis, result via BLPOP",
                Endpoint("huey"),
                "huey",
                "demo DB settings",
            ),
        ]
    return targets


def in_clients(
    func: Callable[..., None], arg_sets: list[tuple[Any, ...]], timeout: float
) -> list[Any]:
    """Run *func* once per argument tuple, each in a forked process; return what each reported.

    *func* gets a queue as its last argument and puts exactly one result on it.
    A client that dies or hangs fails the run instead of blocking it.
    """
    out: Any = CTX.Queue()
    children = [CTX.Process(target=func, args=(*args, out)) for args in arg_sets]
    for child in children:
        child.start()
    results = []
    deadline = time.monotonic() + timeout
    try:
        while len(results) < len(children):
            try:
                results.append(out.get(timeout=0.5))
            except queue.Empty:
                dead = [c for c in children if c.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"client {func.__name__} failed (exit codes "
                        f"{[c.exitcode for c in children]}); see its traceback above"
                    ) from None
    finally:
        for child in children:
            child.join(1.0)
            if child.is_alive():
                child.kill()
                child.join()
    return results


def wait_ready(stack: Stack, targets: list[Target], pk: int) -> None:
    """Wait until every target answers one request (each probe in a client process)."""
    for target in targets:
        [error] = in_clients(probe_client, [(target.endpoint, pk, 60.0)], 90.0)
        if error is not None:
            raise RuntimeError(
                f"{target.name} never answered: {error}\n{stack.log_tail(target.server)}"
            )


# -- measuring ---------------------------------------------------------------


def measure_latency(target: Target, ids: list[int], count: int) -> tuple[list[float], int]:
    """Return one client's request times (seconds) and failures."""
    [(samples, failures)] = in_clients(latency_client, [(target.endpoint, ids, count)], 300.0)
    return samples, failures


def measure_throughput(
    target: Target, ids: list[int], clients: int, seconds: float
) -> tuple[float, int]:
    """Return requests/s of *clients* processes together, and their failures."""
    barrier = CTX.Barrier(clients)
    args = [(target.endpoint, ids, seconds, seed, barrier) for seed in range(clients)]
    results = in_clients(throughput_client, args, seconds + 120.0)
    return sum(done for done, _ in results) / seconds, sum(failed for _, failed in results)


def percentile(samples: list[float], q: float) -> float:
    """Return the *q* quantile (0..1) of *samples*, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run_rounds(stack: Stack, targets: list[Target], ids: list[int], plan: Plan) -> None:
    """Measure every target once per round, rotating the order each round."""
    for round_no in range(plan.rounds):
        shift = round_no % len(targets)
        order = targets[shift:] + targets[:shift]
        print(f"round {round_no + 1}/{plan.rounds}", flush=True)
        for target in order:
            samples, failures = measure_latency(target, ids, plan.latency_count)
            target.add("failures", failures)
            if samples:
                target.add("p50", percentile(samples, 0.5) * 1000)
                target.add("p99", percentile(samples, 0.99) * 1000)
            for clients in plan.clients:
                rate, failed = measure_throughput(target, ids, clients, plan.throughput_seconds)
                target.add(f"rps{clients}", rate)
                target.add("failures", failed)
            line = f"  {target.name:<20} p50 {target.samples.get('p50', [0])[-1]:7.3f} ms"
            print(
                line
                + "".join(f"  {c}c {target.samples[f'rps{c}'][-1]:7.0f}/s" for c in plan.clients),
                flush=True,
            )
        time.sleep(0.5)
        for target in targets:
            process = stack.processes[target.server]
            target.add("rss", rss_kib(process.pid) / 1024)


def measure_idle_connections(
    stack: Stack, targets: list[Target], ids: list[int], plan: Plan
) -> dict[str, dict[str, float]]:
    """p50 with and without *plan.idle_connections* idle client connections held open."""
    results: dict[str, dict[str, float]] = {}
    for target in targets:
        without: list[float] = []
        with_idle: list[float] = []
        rss_idle: list[float] = []
        for _ in range(plan.rounds):
            samples, _ = measure_latency(target, ids, plan.latency_count)
            without.append(percentile(samples, 0.5) * 1000)
            held = open_idle(target.endpoint.address, plan.idle_connections)
            try:
                time.sleep(0.5)
                rss_idle.append(rss_kib(stack.processes[target.server].pid) / 1024)
                samples, _ = measure_latency(target, ids, plan.latency_count)
                with_idle.append(percentile(samples, 0.5) * 1000)
            finally:
                for sock in held:
                    sock.close()
            time.sleep(0.3)
        results[target.name] = {
            "p50": statistics.median(without),
            "p50_idle": statistics.median(with_idle),
            "rss_idle": statistics.median(rss_idle),
        }
    return results


def open_idle(path: str, count: int) -> list[socket.socket]:
    """Open *count* connections to *path* and leave them silent."""
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        held.append(sock)
    return held


# -- dead connections --------------------------------------------------------


def _failures(call: Callable[[int], object], pks: list[int]) -> int:
    failed = 0
    for pk in pks:
        try:
            call(pk)
        except Exception:
            failed += 1
    return failed


def dead_connections(
    stack: Stack, targets: list[Target], ids: list[int], plan: Plan
) -> dict[str, dict[str, int]]:
    """Count failed requests after the DB sessions were killed or timed out between requests.

    Each cycle warms every target (8 requests: every worker thread holds a
    connection), then kills all sessions (or lets them time out), then makes
    8 requests per target and counts the failures.
    """
    callers = {t.name: make_caller(t.endpoint) for t in targets}
    pks = ids[:8]
    scenarios: list[tuple[str, float]] = [("killed, next request at once", 0.05)]
    if plan.full:
        scenarios.append(("killed, next request after 1.5 s idle", 1.5))
    counts: dict[str, dict[str, int]] = {t.name: {} for t in targets}

    def warm() -> None:
        for name, call in callers.items():
            # Warm-up failures are not counted: they belong to the previous cycle's damage.
            _failures(call, pks)
            counts[name].setdefault("requests", 0)

    for title, gap in scenarios:
        for _ in range(plan.kill_cycles):
            warm()
            stack.kill_db_sessions()
            time.sleep(gap)
            for name, call in callers.items():
                counts[name][title] = counts[name].get(title, 0) + _failures(call, pks)
                counts[name]["requests"] += len(pks)
    if plan.timeout_cycles:
        title = "wait_timeout=2 s passed while idle"
        stack.set_wait_timeout(2)
        try:
            for _ in range(plan.timeout_cycles):
                stack.kill_db_sessions()  # the next connections are opened with the short timeout
                warm()
                warm()
                time.sleep(3.0)
                for name, call in callers.items():
                    counts[name][title] = counts[name].get(title, 0) + _failures(call, pks)
                    counts[name]["requests"] += len(pks)
        finally:
            stack.set_wait_timeout(28800)
    return counts


# -- the run -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 if socketsvc failed a request)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny counts, socketsvc and the floor only; writes nothing",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the hot-path profile")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument(
        "--docs", default=str(report.DOCS), help="where benchmarks.md and the chart go"
    )
    options = parser.parse_args(argv)
    plan = SMOKE if options.smoke else FULL
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = plan.idle_connections + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if shutil.which("redis-cli") is None and plan.full:
        raise SystemExit("redis-cli not found: the full run needs Redis on 127.0.0.1:6379")
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
            stack,
            [
                by_name[n]
                for n in (
                    "bare-orm",
                    "bare-orm-60",
                    "socketsvc",
                    "socketsvc-0",
                    "socketsvc-pingall",
                )
            ],
            ids,
            plan,
        )
        profile: dict[str, Any] | None = None
        if plan.full and not options.no_profile:
            from bench import hotpath

            print("profiling the hot path", flush=True)
            profile = hotpath.run(stack, by_name["socketsvc"], by_name["socketsvc-0"], ids)
        elapsed = time.monotonic() - started
        results = report.Results(
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
        )
        print(report.text(results))
        if plan.full:
            report.write(results, Path(options.docs), stack)
            print(f"wrote {options.docs}/benchmarks.md and benchmarks.png")
        return 0 if report.socketsvc_clean(results) else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
