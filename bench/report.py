"""Turn a run's figures into the printed table, ``docs/benchmarks.md`` and the chart."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Target
    from bench.stack import Stack

DOCS = Path(__file__).resolve().parent.parent / "docs"
PERSISTENT = ("socketsvc", "socketsvc-pingall")


@dataclass
class Results:
    """Everything one run measured."""

    targets: list[Target]
    idle: dict[str, dict[str, float]]
    resilience: dict[str, dict[str, int]]
    profile: dict[str, Any] | None
    rounds: int
    latency_count: int
    throughput_seconds: float
    idle_connections: int
    elapsed: float
    load_at_start: tuple[float, float, float]

    def target(self, name: str) -> Target | None:
        """Return the target called *name*, if it was measured."""
        return next((t for t in self.targets if t.name == name), None)

    def median(self, name: str, figure: str) -> float | None:
        """Return a target's median figure, or None."""
        target = self.target(name)
        return None if target is None else target.median(figure)


@dataclass
class Check:
    """One target of the issue, and where the run landed."""

    goal: str
    measured: str
    ratio: float | None
    limit: float
    at_most: bool

    @property
    def met(self) -> bool | None:
        """Return whether the target is met (None if not measured)."""
        if self.ratio is None:
            return None
        return self.ratio <= self.limit if self.at_most else self.ratio >= self.limit


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


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

    def add(goal: str, measured: str, ratio: float | None, limit: float, at_most: bool) -> None:
        found.append(Check(goal, measured, ratio, limit, at_most))

    add(
        "ORM request p50 ≤ 1.05 x bare server + ORM (CONN_MAX_AGE=0: no failures)",
        f"{_fmt(p50, 3)} ms vs {_fmt(m('bare-orm', 'p50'), 3)} ms",
        _ratio(p50, m("bare-orm", "p50")),
        1.05,
        True,
    )
    add(
        "same, both connecting per request: socketsvc-0 vs bare-orm",
        f"{_fmt(m('socketsvc-0', 'p50'), 3)} ms vs {_fmt(m('bare-orm', 'p50'), 3)} ms",
        _ratio(m("socketsvc-0", "p50"), m("bare-orm", "p50")),
        1.05,
        True,
    )
    for name in PERSISTENT:
        add(
            f"same, vs the bare server keeping connections unchecked: {name} vs bare-orm-60",
            f"{_fmt(m(name, 'p50'), 3)} ms vs {_fmt(m('bare-orm-60', 'p50'), 3)} ms",
            _ratio(m(name, "p50"), m("bare-orm-60", "p50")),
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
        f"{_fmt(m('socketsvc', 'rps8'), 0)} vs {_fmt(m('bare-orm', 'rps8'), 0)} /s",
        _ratio(m("socketsvc", "rps8"), m("bare-orm", "rps8")),
        1.5,
        False,
    )
    add(
        "same, vs bare-orm-60",
        f"{_fmt(m('socketsvc', 'rps8'), 0)} vs {_fmt(m('bare-orm-60', 'rps8'), 0)} /s",
        _ratio(m("socketsvc", "rps8"), m("bare-orm-60", "rps8")),
        1.5,
        False,
    )
    add(
        "rpc.ping p50 ≤ 1.3 x bare server without DB",
        f"{_fmt(m('socketsvc-ping', 'p50'), 3)} ms vs {_fmt(m('floor', 'p50'), 3)} ms",
        _ratio(m("socketsvc-ping", "p50"), m("floor", "p50")),
        1.3,
        True,
    )
    for name, limit in (("gunicorn", 1.6), ("celery", 6.0), ("huey", 2.5)):
        add(
            f"p50 ≥ {limit:g}x faster than {name}",
            f"{_fmt(m(name, 'p50'), 3)} ms vs {_fmt(p50, 3)} ms",
            _ratio(m(name, "p50"), p50),
            limit,
            False,
        )
    rss = m("socketsvc", "rss")
    add("idle RSS ≤ 45 MiB", f"{_fmt(rss, 1)} MiB", rss, 45, True)
    idle = results.idle.get("socketsvc")
    add(
        f"p50 with {results.idle_connections} idle connections ≤ 1.1 x without",
        f"{_fmt(idle and idle['p50_idle'], 3)} ms vs {_fmt(idle and idle['p50'], 3)} ms",
        _ratio(idle and idle["p50_idle"], idle and idle["p50"]),
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


# -- tables ------------------------------------------------------------------


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _plain(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
                _fmt(p50, 3),
                _fmt(t.median("p99"), 3),
                _fmt(rps1, 0),
                _fmt(rps8, 0),
                _fmt(t.median("rss"), 1),
                _fmt(_ratio(p50, f50)),
                _fmt(_ratio(rps1, f1)),
                _fmt(_ratio(rps8, f8)),
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
        rows.append([check.goal, check.measured, _fmt(check.ratio), verdict])
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
            _fmt(row["p50"], 3),
            _fmt(row["p50_idle"], 3),
            _fmt(_ratio(row["p50_idle"], row["p50"])),
            _fmt(row["rss_idle"], 1),
        ]
        for name, row in results.idle.items()
    ]


def text(results: Results) -> str:
    """Return the tables as plain text for the terminal."""
    short, _, rows = main_table(results)
    resilience_header, resilience = resilience_rows(results)
    parts = [
        _plain(short[:-1], [row[:-1] for row in rows]),
        "",
        _plain(["target", "measured", "ratio", "verdict"], check_rows(results)),
        "",
        _plain(resilience_header, resilience),
        "",
        _plain(
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
    if results.profile:
        for section in results.profile["sections"]:
            parts += ["", section["title"], _plain(section["header"], section["rows"])]
    parts.append(f"\n{results.rounds} rounds, {results.elapsed:.0f} s")
    return "\n".join(parts)


# -- docs --------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(results: Results, stack: Stack) -> list[tuple[str, str]]:
    """Return what the figures were measured on."""
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
        ("MariaDB", str(stack.db.query("SELECT VERSION()")[0][0])),
        ("mysqlclient", _version("mysqlclient")),
        ("gunicorn", _version("gunicorn")),
        ("Celery", _version("celery")),
        ("huey", _version("huey")),
        ("Redis server / redis-py", f"{redis_version} / {_version('redis')}"),
    ]


def write(results: Results, docs: Path, stack: Stack) -> None:
    """Write ``benchmarks.md`` and ``benchmarks.png`` into *docs*."""
    docs.mkdir(parents=True, exist_ok=True)
    chart(results, docs / "benchmarks.png")
    _, long, rows = main_table(results)
    resilience_header, resilience = resilience_rows(results)
    lines = [
        "# Benchmarks",
        "",
        "socketsvc against the Python floor and the tools users would pick instead, "
        "measured in one run of `.venv/bin/python bench/run.py`.",
        "",
        "![p50 latency and requests/s per server](benchmarks.png)",
        "",
        "Every server does the same unit of work: one `Product` row by primary key "
        "through the ORM on MariaDB (a throwaway `mariadbd` on a Unix socket, "
        f"{results.rounds} interleaved rounds, medians), the name back. Clients are "
        "separate processes: socketsvc and the bare servers are called with "
        "`socketsvc.call()` (one connection per call), gunicorn with one HTTP/1.1 "
        "request per connection, Celery with `delay().get()`, huey with "
        "`task().get(blocking=True)`. p50/p99 come from one client making "
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
        _markdown(["", ""], [[k, v] for k, v in machine(results, stack)]),
        "",
        "## Figures",
        "",
        _markdown(long, rows),
        "",
        "## Targets",
        "",
        _markdown(["target", "measured", "ratio", "verdict"], check_rows(results)),
        "",
        "## Dead database connections",
        "",
        "Failed requests after every MariaDB session of the benchmark database was "
        "`KILL`ed (through a side connection) between requests, or after the "
        "sessions passed a 2 s `wait_timeout` while idle. Each cycle warms every "
        "worker's connection first; socketsvc runs 4 worker threads, each with its "
        "own connection, so one cycle can break up to 4 of them.",
        "",
        _markdown(resilience_header, resilience),
        "",
        f"## {results.idle_connections} idle connections",
        "",
        f"p50 of one client while {results.idle_connections} other connections sit open "
        "and silent.",
        "",
        _markdown(
            ["target", "p50 ms", "p50 ms with idle connections", "ratio", "RSS MiB with them"],
            idle_rows(results),
        ),
        "",
    ]
    if results.profile:
        lines += ["## Hot-path profile", "", results.profile["intro"], ""]
        for section in results.profile["sections"]:
            lines += [f"### {section['title']}", "", section["text"], ""]
            lines += [_markdown(section["header"], section["rows"]), ""]
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
        "* **Where socketsvc's time goes** beyond the bare server: the request log line "
        "(written in the worker before the reply is handed back), the ping of a reused "
        "connection, the hand-off to a worker thread and back, and the Python work of "
        "the loop per connection (accept, peer credentials, admission, interest "
        "changes). The JSON codec is a few microseconds of a millisecond. See the "
        "profile sections for this run's numbers.",
        "* **Idle RSS** is mostly Django: the bare ORM server, which imports the same "
        "settings and apps, sits within a few MiB of the daemon.",
        "* **Noise.** The figures are medians of interleaved rounds on a 2-core machine "
        "that other work may share (see the load average above); ratios from the same "
        "run are what to compare.",
        "",
        "## Reproduce",
        "",
        "    .venv/bin/pip install -e '.[bench]'",
        "    .venv/bin/python bench/run.py           # about "
        f"{round(results.elapsed / 60) or 1} min; rewrites this page and the chart",
        "    .venv/bin/python bench/run.py --smoke   # CI: socketsvc and the floor, tiny counts",
        "",
        "Needs MariaDB's server binaries (`mariadbd`, `mariadb-install-db`) and Redis on "
        "127.0.0.1:6379 (databases 13 and 14 are flushed and used).",
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
