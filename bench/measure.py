"""Measuring running targets: latency, throughput, idle connections, dead DB connections.

Every request is made from client processes (:mod:`bench.clients`) forked
here, so the figures never include this interpreter's own work.
"""

from __future__ import annotations

import queue
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.clients import latency_client, make_caller, throughput_client
from bench.model import CTX, Plan, Target, percentile
from bench.stack import Stack, cpu_ns, largest_rss_kib, rss_kib


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
    results: list[Any] = []
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


# -- latency and throughput --------------------------------------------------


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
            pid = stack.processes[target.server].pid
            for clients in plan.clients:
                before = cpu_ns(pid)
                rate, failed = measure_throughput(target, ids, clients, plan.throughput_seconds)
                spent = cpu_ns(pid) - before
                target.add(f"rps{clients}", rate)
                target.add("failures", failed)
                if clients == max(plan.clients) and rate:
                    # The server's CPU per request, from its own accounting, under load.
                    target.add("cpu_us", spent / 1000 / (rate * plan.throughput_seconds))
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
            target.add("rss_process", largest_rss_kib(process.pid) / 1024)


# -- idle connections --------------------------------------------------------


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
