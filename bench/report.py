"""Turn a run's figures into the printed table, ``docs/benchmarks.md`` and the charts.

Reads only :mod:`bench.model`, :mod:`bench.goals` and (for the task section)
:mod:`bench.taskreport`: it never measures.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from bench import taskreport
from bench.goals import checks
from bench.model import Results, fmt, markdown_table, plain_table, ratio

DOCS = Path(__file__).resolve().parent.parent / "docs"


# -- tables ------------------------------------------------------------------


def main_table(results: Results) -> tuple[list[str], list[str], list[list[str]]]:
    """Return the per-target figures: short header, long header, rows."""
    floor = results.target("floor")
    assert floor is not None
    f50, f1, f8 = floor.median("p50"), floor.median("rps1"), floor.median("rps8")
    rows = []
    for t in results.targets:
        p50, rps1, rps8 = t.median("p50"), t.median("rps1"), t.median("rps8")
        rows.append(
            [
                t.name,
                fmt(p50, 3),
                fmt(t.median("p99"), 3),
                fmt(rps1, 0),
                fmt(rps8, 0),
                fmt(t.median("cpu_us"), 0),
                fmt(t.median("rss"), 1),
                fmt(ratio(p50, f50)),
                fmt(ratio(rps1, f1)),
                fmt(ratio(rps8, f8)),
                str(int(sum(t.samples.get("failures", [])))),
                t.label + (f"; {t.note}" if t.note else ""),
            ]
        )
    short = [
        "target",
        "p50 ms",
        "p99 ms",
        "req/s 1c",
        "req/s 8c",
        "CPU µs/req",
        "RSS MiB",
        "p50 xfloor",
        "1c xfloor",
        "8c xfloor",
        "failed",
        "what",
    ]
    long = [
        "target",
        "p50 ms",
        "p99 ms",
        "req/s, 1 client",
        "req/s, 8 clients",
        "server CPU µs per request (8 clients)",
        "idle RSS MiB",
        "p50 x floor",
        "req/s 1 x floor",
        "req/s 8 x floor",
        "failed",
        "what",
    ]
    return short, long, rows


def check_rows(results: Results) -> list[list[str]]:
    """Return the targets of the issue as table rows."""
    rows = []
    for check in checks(results):
        verdict = {True: "met", False: "**missed**", None: "not measured"}[check.met]
        rows.append([check.goal, check.measured, fmt(check.ratio), verdict])
    return rows


def resilience_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """Return failed requests per dead-connection scenario and target."""
    scenarios: list[str] = []
    for counts in results.resilience.values():
        scenarios += [k for k in counts if k != "requests" and k not in scenarios]
    rows = [
        [name, *(str(counts.get(s, 0)) for s in scenarios), str(counts.get("requests", 0))]
        for name, counts in results.resilience.items()
    ]
    return ["target", *scenarios, "requests made"], rows


def idle_rows(results: Results) -> list[list[str]]:
    """Return p50 with and without idle connections held open."""
    return [
        [
            name,
            fmt(row["p50"], 3),
            fmt(row["p50_idle"], 3),
            fmt(ratio(row["p50_idle"], row["p50"])),
            fmt(row["rss_idle"], 1),
        ]
        for name, row in results.idle.items()
    ]


def text(results: Results) -> str:
    """Return the tables as plain text for the terminal."""
    short, _, rows = main_table(results)
    resilience_header, resilience = resilience_rows(results)
    parts = [
        plain_table(short[:-1], [row[:-1] for row in rows]),
        "",
        plain_table(["target", "measured", "ratio", "verdict"], check_rows(results)),
        "",
        plain_table(resilience_header, resilience),
        "",
        plain_table(
            [
                "target",
                "p50 ms",
                f"p50 ms, {results.idle_connections} idle",
                "ratio",
                "RSS MiB then",
            ],
            idle_rows(results),
        ),
    ]
    if results.tasks:
        parts += ["", "Background tasks", taskreport.text(results.tasks)]
    if results.profile:
        for section in results.profile["sections"]:
            parts += ["", section["title"], plain_table(section["header"], section["rows"])]
    parts.append(f"\n{results.rounds} rounds, {results.elapsed:.0f} s")
    return "\n".join(parts)


# -- docs --------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(results: Results, mariadb: str) -> list[tuple[str, str]]:
    """Return what the figures were measured on; *mariadb* is the database server's version."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    redis = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "INFO", "server"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    redis_version = next(
        (
            line.split(":", 1)[1].strip()
            for line in redis.splitlines()
            if line.startswith("redis_version")
        ),
        "unknown",
    )
    os_name = platform.freedesktop_os_release().get("PRETTY_NAME", platform.platform())
    return [
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("OS", f"{os_name}, Linux {platform.release()}"),
        ("load average at start", "{:.2f} {:.2f} {:.2f}".format(*results.load_at_start)),
        ("Python", platform.python_version()),
        ("Django", _version("Django")),
        ("MariaDB", mariadb),
        ("mysqlclient", _version("mysqlclient")),
        ("gunicorn", _version("gunicorn")),
        ("Celery", _version("celery")),
        ("huey", _version("huey")),
        ("Redis server / redis-py", f"{redis_version} / {_version('redis')}"),
    ]


def write(results: Results, docs: Path, mariadb: str) -> None:
    """Write ``benchmarks.md``, ``benchmarks.png`` (and ``benchmarks-tasks.png``) into *docs*.

    *mariadb* is the database server's version, for the machine table.
    """
    docs.mkdir(parents=True, exist_ok=True)
    chart(results, docs / "benchmarks.png")
    if results.tasks:
        taskreport.chart(results.tasks, docs / taskreport.CHART)
    _, long, rows = main_table(results)
    resilience_header, resilience = resilience_rows(results)
    lines = [
        "# Benchmarks",
        "",
        "socketsvc against the Python floor and the tools users would pick instead, "
        "measured in one run of `.venv/bin/python -m bench`.",
        "",
        "![p50 latency and requests/s per server](benchmarks.png)",
        "",
        "Every server does the same unit of work: one `Product` row by primary key "
        "through the ORM on MariaDB (a throwaway `mariadbd` on a Unix socket, "
        f"{results.rounds} interleaved rounds, medians), the name back. Clients are "
        "separate processes: socketsvc and the bare servers are called with "
        "`socketsvc.call()` (which keeps one connection per client thread), gunicorn "
        "with one HTTP/1.1 request per connection (its sync worker does not keep them), "
        "Celery with `delay().get()`, huey with `task().get(blocking=True)`. "
        "p50/p99 come from one client making "
        f"{results.latency_count} requests in a row; requests/s from 1 and 8 client "
        f"processes over {results.throughput_seconds:g} s each. RSS is the server "
        "process tree's VmRSS, idle after the round.",
        "",
        "The floor is a bare single-threaded `selectors` server (`bench/bare_server.py`) "
        "speaking the same protocol with no validation, no threads and no logging. "
        "`bare-orm` is that server running the lookup between two "
        "`close_old_connections()` calls, as Django does around an HTTP request. "
        "Compare like with like: `socketsvc`, gunicorn, Celery and huey run the demo's "
        "settings (`CONN_MAX_AGE=60` with `CONN_HEALTH_CHECKS`: safe, because every "
        "reused connection is checked); `bare-orm` and `socketsvc-0` open a MariaDB "
        "connection per request (`CONN_MAX_AGE=0`, Django's default); `bare-orm-60` keeps "
        "connections unchecked and fails once per dead one.",
        "",
        "## Machine",
        "",
        markdown_table(["", ""], [[k, v] for k, v in machine(results, mariadb)]),
        "",
        "## Figures",
        "",
        markdown_table(long, rows),
        "",
        "## Targets",
        "",
        markdown_table(["target", "measured", "ratio", "verdict"], check_rows(results)),
        "",
        "## Dead database connections",
        "",
        "Failed requests after every MariaDB session of the benchmark database was "
        "`KILL`ed (through a side connection) between requests, or after the "
        "sessions passed a 2 s `wait_timeout` while idle. Each cycle warms every "
        "worker's connection first; socketsvc runs 4 worker threads, each with its "
        "own connection, so one cycle can break up to 4 of them.",
        "",
        markdown_table(resilience_header, resilience),
        "",
        f"## {results.idle_connections} idle connections",
        "",
        f"p50 of one client while {results.idle_connections} other connections sit open "
        "and silent.",
        "",
        markdown_table(
            ["target", "p50 ms", "p50 ms with idle connections", "ratio", "RSS MiB with them"],
            idle_rows(results),
        ),
        "",
    ]
    if results.tasks:
        lines += [taskreport.section(results.tasks), ""]
    if results.profile:
        lines += ["## Hot-path profile", "", results.profile["intro"], ""]
        for section in results.profile["sections"]:
            lines += [f"### {section['title']}", "", section["text"], ""]
            lines += [markdown_table(section["header"], section["rows"]), ""]
    lines += [
        "## Reading the figures",
        "",
        "* **Dead connections.** Only socketsvc with `DB_CHECK_AFTER_IDLE=0` (and any "
        "server that connects per request) never fails. With a threshold, a connection "
        "killed *less* than the threshold after its last use still fails once per "
        "worker; one idle past the threshold (the `wait_timeout` case, which is what "
        "happens in production overnight) is pinged and replaced. The bare server with "
        "persistent connections fails once per dead connection, as every Django "
        "process outside the request cycle does.",
        "* **Where socketsvc's time goes** beyond the bare server: the hand-off from "
        "the loop thread to a worker thread (the worker sends the reply itself, then "
        "tells the loop), the GIL shared by the loop and the workers, the request log "
        "line (written after the reply is sent, but on the worker that takes the next "
        "request), the ping of a connection reused after `DB_CHECK_AFTER_IDLE`, and "
        "the loop's Python work per request (framing, parsing, admission). The JSON "
        "codec is a few microseconds of a millisecond. See the profile sections for "
        "this run's numbers.",
        "* **Idle RSS** is mostly Django: the bare ORM server imports the same settings "
        "and apps; the difference in the table is the daemon's own modules, threads "
        "and the task runner.",
        "* **Noise.** The figures are medians of interleaved rounds on a 2-core machine "
        "that other work may share (see the load average above); ratios from the same "
        "run are what to compare.",
        "",
        "## Reproduce",
        "",
        "    .venv/bin/pip install -e '.[bench]'",
        "    .venv/bin/python -m bench           # about "
        f"{round(results.elapsed / 60) or 1} min; rewrites this page and the chart",
        "    .venv/bin/python -m bench --smoke   # CI: socketsvc and the floor, tiny counts",
        "    .venv/bin/python -m bench --tasks-only [--docs]   # the task section alone",
        "",
        "Needs MariaDB's server binaries (`mariadbd`, `mariadb-install-db`) and Redis on "
        "127.0.0.1:6379 (databases 13 and 14 are flushed and used; 14 by huey, then by "
        "RQ in the task section).",
        "",
    ]
    (docs / "benchmarks.md").write_text("\n".join(lines))


def chart(results: Results, path: Path) -> None:
    """Draw p50 latency and requests/s per target, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(reversed(results.targets))
    names = [t.name for t in targets]
    colors = ["#1f77b4" if t.name.startswith("socketsvc") else "#999999" for t in targets]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.6), sharey=True)
    p50 = [t.median("p50") or 0 for t in targets]
    p99 = [t.median("p99") or 0 for t in targets]
    left.barh(names, p50, color=colors)
    left.scatter(p99, names, marker="|", color="black", s=120, label="p99", zorder=3)
    left.set_xscale("log")
    left.set_xlabel("latency, ms (log scale): bar p50, tick p99")
    left.legend(loc="lower right")
    for y, value in enumerate(p50):
        left.annotate(
            f"{value:.2f}",
            (value, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    rps1 = [t.median("rps1") or 0 for t in targets]
    rps8 = [t.median("rps8") or 0 for t in targets]
    ys = range(len(names))
    right.barh([y + 0.2 for y in ys], rps8, height=0.4, color=colors, label="8 clients")
    right.barh([y - 0.2 for y in ys], rps1, height=0.4, color=colors, alpha=0.45, label="1 client")
    right.set_xlabel("requests/s (dark: 8 clients, light: 1 client)")
    for y, value in enumerate(rps8):
        right.annotate(
            f"{value:.0f}",
            (value, y + 0.2),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    fig.suptitle("One ORM lookup by primary key on MariaDB, per request (2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
