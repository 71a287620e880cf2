"""The issue's targets, checked against a run's figures.

Pure functions of :class:`~bench.model.Results` and
:class:`~bench.model.TaskResults`: what the printed verdicts,
``docs/benchmarks.md`` and the exit status of ``python -m bench`` are based on.
"""

from __future__ import annotations

from bench.model import Check, Results, TaskResults, fmt, ratio

PERSISTENT = ("socketsvc", "socketsvc-pingall")


def dead_failures(results: Results, name: str) -> tuple[int, int]:
    """Return (failed, made) requests of a target over every dead-connection scenario."""
    counts = results.resilience.get(name, {})
    failed = sum(v for k, v in counts.items() if k != "requests")
    return failed, counts.get("requests", 0)


def checks(results: Results) -> list[Check]:
    """Evaluate every target of the issue against this run."""
    m = results.median
    found: list[Check] = []
    p50 = m("socketsvc", "p50")

    def add(goal: str, measured: str, value: float | None, limit: float, at_most: bool) -> None:
        found.append(Check(goal, measured, value, limit, at_most))

    for name in PERSISTENT:
        add(
            f"ORM p50 ≤ 1.15 x the bare server keeping unchecked connections: {name}",
            f"{fmt(m(name, 'p50'), 3)} ms vs {fmt(m('bare-orm-60', 'p50'), 3)} ms",
            ratio(m(name, "p50"), m("bare-orm-60", "p50")),
            1.15,
            True,
        )
    add(
        "same, both connecting per request: socketsvc-0 vs bare-orm",
        f"{fmt(m('socketsvc-0', 'p50'), 3)} ms vs {fmt(m('bare-orm', 'p50'), 3)} ms",
        ratio(m("socketsvc-0", "p50"), m("bare-orm", "p50")),
        1.15,
        True,
    )
    for name in ("socketsvc", "socketsvc-0"):
        failed, made = dead_failures(results, name)
        add(
            f"{name}: failed requests after killed / timed-out DB sessions = 0",
            f"{failed} of {made} (bare-orm-60: {dead_failures(results, 'bare-orm-60')[0]})",
            float(failed) if made else None,
            0,
            True,
        )
    for name, limit in (("gunicorn", 1.5), ("celery", 5.0), ("huey", 2.5)):
        add(
            f"p50 ≥ {limit:g}x faster than {name}",
            f"{fmt(m(name, 'p50'), 3)} ms vs {fmt(p50, 3)} ms",
            ratio(m(name, "p50"), p50),
            limit,
            False,
        )
    for bare in ("bare-orm-60", "bare-orm"):
        add(
            f"req/s, 8 clients, --processes 2 ≥ 1.5 x single-process {bare}",
            f"{fmt(m('socketsvc-2p', 'rps8'), 0)} vs {fmt(m(bare, 'rps8'), 0)} /s",
            ratio(m("socketsvc-2p", "rps8"), m(bare, "rps8")),
            1.5,
            False,
        )
    add(
        "server CPU per ORM request ≤ 1.3 x the bare server's (8 clients)",
        f"{fmt(m('socketsvc', 'cpu_us'), 0)} µs vs {fmt(m('bare-orm-60', 'cpu_us'), 0)} µs",
        ratio(m("socketsvc", "cpu_us"), m("bare-orm-60", "cpu_us")),
        1.3,
        True,
    )
    add(
        "rpc.ping p50 ≤ 1.2 x bare server without DB",
        f"{fmt(m('socketsvc-ping', 'p50'), 3)} ms vs {fmt(m('floor', 'p50'), 3)} ms",
        ratio(m("socketsvc-ping", "p50"), m("floor", "p50")),
        1.2,
        True,
    )
    for name in ("socketsvc", "socketsvc-2p"):
        rss = m(name, "rss_process")
        add(f"idle RSS ≤ 45 MiB per worker process: {name}", f"{fmt(rss, 1)} MiB", rss, 45, True)
    idle = results.idle.get("socketsvc")
    add(
        f"p50 with {results.idle_connections} idle connections ≤ 1.1 x without",
        f"{fmt(idle and idle['p50_idle'], 3)} ms vs {fmt(idle and idle['p50'], 3)} ms",
        ratio(idle and idle["p50_idle"], idle and idle["p50"]),
        1.1,
        True,
    )
    return found


def socketsvc_clean(results: Results) -> bool:
    """Return True if no socketsvc request failed where socketsvc promises safety."""
    perf = sum(
        sum(t.samples.get("failures", []))
        for t in results.targets
        if t.name.startswith("socketsvc")
    )
    return perf == 0 and all(
        dead_failures(results, n)[0] == 0 for n in ("socketsvc", "socketsvc-0")
    )


# -- the task benchmark --------------------------------------------------------

# The task targets: enqueue -> started p50 in ms, and tasks/s against these systems.
TASK_P50_MS = 5.0
TASK_RATE_VS = (("db_worker-0", 3.0), ("rq", 1.0))


def task_checks(tasks: TaskResults) -> list[Check]:
    """Evaluate the issue's task targets against this run."""
    found: list[Check] = []
    p50 = tasks.latency("socketsvc", 0.5)
    found.append(
        Check(
            f"task: enqueue → started p50 ≤ {TASK_P50_MS:g} ms",
            f"{fmt(p50)} ms (p99 {fmt(tasks.latency('socketsvc', 0.99))} ms)",
            p50,
            TASK_P50_MS,
            True,
        )
    )
    ours_names = [s.name for s in tasks.systems if s.backend == "socketsvc"]
    for name in ours_names:
        found += _rate_checks(tasks, name, len(ours_names) > 1)
    return found


def _rate_checks(tasks: TaskResults, name: str, named: bool) -> list[Check]:
    found: list[Check] = []
    label = f" ({name})" if named else ""
    for producers in tasks.producers:
        ours = tasks.median(name, f"tps{producers}")
        for other, limit in TASK_RATE_VS:
            theirs = tasks.median(other, f"tps{producers}")
            found.append(
                Check(
                    f"task: tasks/s{label}, {producers} producer{'s' if producers > 1 else ''}, "
                    f"≥ {limit:g} x {other}",
                    f"{fmt(ours, 0)} vs {fmt(theirs, 0)} /s",
                    ratio(ours, theirs),
                    limit,
                    False,
                )
            )
    return found


def tasks_clean(tasks: TaskResults | None) -> bool:
    """Return True if every socketsvc task of the run succeeded (or none ran)."""
    system = None if tasks is None else tasks.system("socketsvc")
    return system is None or system.failures() == 0
