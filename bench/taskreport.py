"""The task benchmark's figures as the printed table, a section of ``docs/benchmarks.md``, a chart.

Reads only :mod:`bench.model` and :mod:`bench.goals`: it never measures. The
section sits between two markers in ``benchmarks.md``, so ``python -m bench
--tasks-only --docs`` can replace it without rewriting the rest of the page.
"""

from __future__ import annotations

import statistics
from importlib import metadata
from pathlib import Path

from bench.goals import TASK_P50_MS, task_checks
from bench.model import TaskResults, fmt, markdown_table, plain_table

CHART = "benchmarks-tasks.png"
BEGIN, END = "<!-- bench:tasks -->", "<!-- /bench:tasks -->"
_PACKAGES = ("django-tasks", "django-tasks-db", "django-tasks-rq", "django-rq", "rq", "redis")


def table(tasks: TaskResults) -> tuple[list[str], list[list[str]]]:
    """Return the header and rows of the per-system figures (the last column says what it is)."""
    rows = []
    for system in tasks.systems:
        enqueue = statistics.median(system.enqueue_ms) if system.enqueue_ms else None
        rows.append(
            [
                system.name,
                fmt(system.latency(0.5)),
                fmt(system.latency(0.99)),
                fmt(enqueue),
                *(fmt(system.median(f"tps{p}"), 0) for p in tasks.producers),
                fmt(system.median("idle_cpu"), 0),
                str(system.failures()),
                system.workers,
                system.label + (f"; {system.note}" if system.note else ""),
            ]
        )
    header = [
        "system",
        "enqueue → started p50 ms",
        "p99 ms",
        "enqueue() p50 ms",
        *(f"tasks/s, {p} producer{'s' if p > 1 else ''}" for p in tasks.producers),
        "idle CPU %",
        "failed",
        "workers",
        "what",
    ]
    return header, rows


def check_rows(tasks: TaskResults) -> list[list[str]]:
    """Return the issue's task targets as table rows."""
    rows = []
    for check in task_checks(tasks):
        verdict = {True: "met", False: "**missed**", None: "not measured"}[check.met]
        rows.append([check.goal, check.measured, fmt(check.ratio), verdict])
    return rows


def text(tasks: TaskResults) -> str:
    """Return the task tables as plain text for the terminal."""
    header, rows = table(tasks)
    return "\n".join(
        [
            plain_table(header[:-1], [row[:-1] for row in rows]),
            "",
            plain_table(["target", "measured", "ratio", "verdict"], check_rows(tasks)),
            f"\ntasks: {tasks.rounds} round(s), {tasks.elapsed:.0f} s, "
            "1-minute load average {:.2f} at the start, {:.2f} at the end".format(*tasks.load),
        ]
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def section(tasks: TaskResults) -> str:
    """Return the task section of ``benchmarks.md``, markers included."""
    header, rows = table(tasks)
    versions = ", ".join(f"{p} {_version(p)}" for p in _PACKAGES)
    lines = [
        BEGIN,
        "## Background tasks: enqueue → started, tasks/s",
        "",
        f"![enqueue → started and tasks/s per task system]({CHART})",
        "",
        "socketsvc's task runner against django-tasks-db's `db_worker` and RQ "
        "(django-tasks-rq), in one run of the benchmark. Every system runs the same "
        "task, `bench.tasks_app.lookup`: the RPC benchmark's unit of work (one "
        "`Product` by primary key through the ORM on the same throwaway MariaDB, its "
        "name back) as a Django task on the queue `bench`, with the demo's connection "
        "settings (`CONN_MAX_AGE=60`, `CONN_HEALTH_CHECKS`). RQ uses Redis database 14 "
        "on 127.0.0.1:6379.",
        "",
        "**Workers.** Every system runs two tasks at a time: socketsvc one daemon with "
        "`TASK_WORKERS=2` (its default: two threads), `db_worker` two processes, "
        "`rqworker` two processes (one task at a time each). Two, because the machine "
        "has two cores and that is socketsvc's default; more executors than cores "
        "would only measure the scheduler. RQ's default worker forks a work horse per "
        "job; `rq-simple` (`rq.worker.SimpleWorker`, no fork) is shown for reference, "
        "it is not RQ's default.",
        "",
        "**enqueue → started**: one producer, one task at a time on an otherwise idle "
        "system: a pause of 5-15 ms (plus a random share of the poll interval for "
        "`db_worker`'s default `--interval 1`, so tasks arrive anywhere in its sleep), "
        "`enqueue()`, then wait until the task finished (first look after 20 ms, then "
        "every 10 ms), then the next. The figure is the `started_at` the backend "
        "recorded minus the wall-clock time the `enqueue()` call began (same host, same "
        "clock): from `get_result()` for socketsvc and django-tasks-db (their rows), "
        "the RQ job's `started_at` for RQ (set in the work horse, after the fork). "
        f"p50/p99 over {tasks.latency_count} tasks per round "
        f"({tasks.latency_count_polled} for `db_worker` with the default interval) "
        "and every round. `enqueue()` is how long the call itself took.",
        "",
        f"**tasks/s**: {' and '.join(str(p) for p in tasks.producers)} producer "
        f"processes, released together, enqueue {tasks.count} tasks between them as "
        "fast as they can; tasks/s is that count over the time from the first "
        "`enqueue()` call to the last `finished_at` the backend recorded. Producers "
        "and workers share the two cores. **idle CPU** is what the idle workers and "
        "mariadbd used together afterwards, in % of one core (Redis not counted).",
        "",
        "Only one system runs at a time, from an empty task table (or Redis database), "
        f"in {tasks.rounds} round{'s' if tasks.rounds > 1 else ''}, each in a rotated "
        "order; tasks/s and idle CPU are medians of the rounds. The task section took "
        f"{tasks.elapsed:.0f} s; 1-minute load average "
        "{:.2f} at its start, {:.2f} at its end. {}.".format(*tasks.load, versions),
        "",
        markdown_table(header, rows),
        "",
        "### Task targets",
        "",
        markdown_table(["target", "measured", "ratio", "verdict"], check_rows(tasks)),
        "",
        "Reproduce this section alone (a few minutes; prints the tables, and with "
        "`--docs` rewrites only this section and its chart):",
        "",
        "    .venv/bin/python -m bench --tasks-only --docs",
        "",
        END,
    ]
    return "\n".join(lines)


def write_section(tasks: TaskResults, docs: Path) -> None:
    """Write the chart and put the section into ``benchmarks.md`` (replacing the old one)."""
    docs.mkdir(parents=True, exist_ok=True)
    chart(tasks, docs / CHART)
    page = docs / "benchmarks.md"
    old = page.read_text() if page.exists() else "# Benchmarks\n"
    new = section(tasks)
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        page_text = head + new + rest.partition(END)[2]
    elif "\n## Hot-path profile" in old:
        head, _, rest = old.partition("\n## Hot-path profile")
        page_text = f"{head}\n{new}\n\n## Hot-path profile{rest}"
    elif "\n## Reading the figures" in old:
        head, _, rest = old.partition("\n## Reading the figures")
        page_text = f"{head}\n{new}\n\n## Reading the figures{rest}"
    else:
        page_text = f"{old.rstrip()}\n\n{new}\n"
    page.write_text(page_text)


def chart(tasks: TaskResults, path: Path) -> None:
    """Draw enqueue -> started (p50 bar, p99 tick) and tasks/s per system, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(reversed(tasks.systems))
    names = [s.name for s in systems]
    colors = ["#1f77b4" if s.name.startswith("socketsvc") else "#999999" for s in systems]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.55 * len(names) + 1.8), sharey=True)
    p50 = [s.latency(0.5) or 0 for s in systems]
    p99 = [s.latency(0.99) or 0 for s in systems]
    left.barh(names, p50, color=colors)
    left.scatter(p99, names, marker="|", color="black", s=120, label="p99", zorder=3)
    left.axvline(TASK_P50_MS, color="#d62728", linestyle="--", linewidth=1, label="target p50")
    left.set_xscale("log")
    left.set_xlim(left=0.5)
    left.set_xlabel("enqueue → started, ms (log scale): bar p50, tick p99")
    left.legend(loc="lower right")
    for y, value in enumerate(p50):
        left.annotate(
            f"{value:.1f}", (value, y), xytext=(3, 0), textcoords="offset points", va="center"
        )
    counts = tasks.producers
    height = 0.8 / len(counts)
    for n, producers in enumerate(counts):
        rates = [s.median(f"tps{producers}") or 0 for s in systems]
        offset = (n - (len(counts) - 1) / 2) * height
        alpha = 0.45 + 0.55 * n / max(1, len(counts) - 1)
        ys = [y + offset for y in range(len(names))]
        right.barh(ys, rates, height=height, color=colors, alpha=alpha, label=f"{producers}")
        for y, value in zip(ys, rates, strict=True):
            right.annotate(
                f"{value:.0f}",
                (value, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
    shades = ", ".join(f"{'light' if n == 0 else 'dark'}: {p}" for n, p in enumerate(counts))
    right.set_xlabel(f"tasks/s by producer processes ({shades})")
    fig.suptitle("One ORM lookup as a background task, 2 workers per system (2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
