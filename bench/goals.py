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

    add(
        "ORM request p50 ≤ 1.05 x bare server + ORM (CONN_MAX_AGE=0: no failures)",
        f"{fmt(p50, 3)} ms vs {fmt(m('bare-orm', 'p50'), 3)} ms",
        ratio(p50, m("bare-orm", "p50")),
        1.05,
        True,
    )
    add(
        "same, both connecting per request: socketsvc-0 vs bare-orm",
        f"{fmt(m('socketsvc-0', 'p50'), 3)} ms vs {fmt(m('bare-orm', 'p50'), 3)} ms",
        ratio(m("socketsvc-0", "p50"), m("bare-orm", "p50")),
        1.05,
        True,
    )
    for name in PERSISTENT:
        add(
            f"same, vs the bare server keeping connections unchecked: {name} vs bare-orm-60",
            f"{fmt(m(name, 'p50'), 3)} ms vs {fmt(m('bare-orm-60', 'p50'), 3)} ms",
            ratio(m(name, "p50"), m("bare-orm-60", "p50")),
            1.05,
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
    add(
        "req/s with 8 clients ≥ 1.5 x bare server + ORM",
        f"{fmt(m('socketsvc', 'rps8'), 0)} vs {fmt(m('bare-orm', 'rps8'), 0)} /s",
        ratio(m("socketsvc", "rps8"), m("bare-orm", "rps8")),
        1.5,
        False,
    )
    add(
        "same, vs bare-orm-60",
        f"{fmt(m('socketsvc', 'rps8'), 0)} vs {fmt(m('bare-orm-60', 'rps8'), 0)} /s",
        ratio(m("socketsvc", "rps8"), m("bare-orm-60", "rps8")),
        1.5,
        False,
    )
    add(
        "rpc.ping p50 ≤ 1.3 x bare server without DB",
        f"{fmt(m('socketsvc-ping', 'p50'), 3)} ms vs {fmt(m('floor', 'p50'), 3)} ms",
        ratio(m("socketsvc-ping", "p50"), m("floor", "p50")),
        1.3,
        True,
    )
    for name, limit in (("gunicorn", 1.6), ("celery", 6.0), ("huey", 2.5)):
        add(
            f"p50 ≥ {limit:g}x faster than {name}",
            f"{fmt(m(name, 'p50'), 3)} ms vs {fmt(p50, 3)} ms",
            ratio(m(name, "p50"), p50),
            limit,
            False,
        )
    rss = m("socketsvc", "rss")
    add("idle RSS ≤ 45 MiB", f"{fmt(rss, 1)} MiB", rss, 45, True)
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
    for producers in tasks.producers:
        ours = tasks.median("socketsvc", f"tps{producers}")
        for other, limit in TASK_RATE_VS:
            theirs = tasks.median(other, f"tps{producers}")
            found.append(
                Check(
                    f"task: tasks/s, {producers} producer{'s' if producers > 1 else ''}, "
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
