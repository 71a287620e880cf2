"""A chord's fan-in: from the end of its last member to the start of its callback.

    .venv/bin/python -m bench.fanin             # MariaDB (a throwaway server) and PostgreSQL
    .venv/bin/python -m bench.fanin --docs docs  # and put the table into docs/benchmarks.md

Per database, one daemon (``--processes 2``, four task threads each) runs
chords of no-op members; each member returns when it ended, and the callback,
which receives them all, returns how long after the last of them it started
(one host, one clock). That span holds the last member's finishing
transaction (its result, the callback's counter, the callback made READY), the
wake-up, the claim and the callback's start, each about what any task's start
and end cost (the task benchmark's figures). A producer process enqueues one
chord at a time and waits for its callback. ``python -m bench`` (the full run, and
``--tasks-only``) runs it too.
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

from bench.bulk import PG_DB, PG_URL, _migrate
from bench.model import percentile
from bench.probe import REPO, run_json, standalone
from tests.harness.docpage import put_section

# (members per chord, chords) of each row.
SIZES = ((10, 200), (200, 20))
BEGIN, END = "<!-- bench:fanin -->", "<!-- /bench:fanin -->"


def probe(sizes: tuple[tuple[int, int], ...] = SIZES) -> dict[str, list[float]]:
    """Enqueue chords one at a time; return each size's latencies in seconds."""
    import django

    django.setup()
    from bench.tasks_app import fan_in, fan_member
    from socketsvc.models import WorkflowRecord
    from socketsvc.tasks import chord, get_workflow, group, step

    found: dict[str, list[float]] = {}
    for members, chords in sizes:
        latencies = found.setdefault(str(members), [])
        for _ in range(chords):
            flow = chord(group(step(fan_member, n) for n in range(members)), fan_in).enqueue()
            deadline = time.monotonic() + 60
            while WorkflowRecord.objects.filter(id=flow.id, status="RUNNING").exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"chord {flow.id} did not finish in 60 s")
                time.sleep(0.05)  # the figure is measured inside the tasks: waiting is free
            done = get_workflow(flow.id)
            if done.status != "SUCCESSFUL":
                raise RuntimeError(f"chord {flow.id} ended {done.status}: {done.reason}")
            latencies.append(float(done.return_value["latency"]))
    return found


def measure(url: str, base_env: dict[str, str], socket: str) -> dict[str, list[float]]:
    """Return one database's latencies (its schema migrated, a daemon started on it)."""
    env = {
        **base_env,
        "DATABASE_URL": url,
        "BENCH_TASKS": "socketsvc",
        "BENCH_TASK_WORKERS": "4",
        "SOCKETSVC_SOCKET": socket,
    }
    _migrate(env)
    log = Path(socket).with_suffix(".log")
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "manage.py", "runsocketservice", "--processes", "2"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        return dict(run_json(["bench.fanin", "--probe"], env, "the fan-in probe", log))
    finally:
        daemon.terminate()
        daemon.wait(60)


def run(mariadb_url: str, base_env: dict[str, str], base: Path) -> dict[str, Any]:
    """Measure on MariaDB (*mariadb_url*) and on the local PostgreSQL."""
    import psycopg

    results = {"MariaDB": measure(mariadb_url, base_env, str(base / "fanin-m.sock"))}
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as pg:
        pg.execute(f"DROP DATABASE IF EXISTS {PG_DB}")
        pg.execute(f"CREATE DATABASE {PG_DB}")
        try:
            results["PostgreSQL"] = measure(PG_URL, base_env, str(base / "fanin-p.sock"))
        finally:
            pg.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    return results


def text(results: dict[str, Any]) -> str:
    """Return the table."""
    lines = [
        "| database | members | chords | p50 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for name, sizes in results.items():
        for members, latencies in sizes.items():
            ms = sorted(value * 1000 for value in latencies)
            lines.append(
                f"| {name} | {members} | {len(ms)} | {percentile(ms, 0.5):.2f} ms | "
                f"{percentile(ms, 0.99):.2f} ms | {ms[-1]:.2f} ms |"
            )
    return "\n".join(lines)


def section(results: dict[str, Any]) -> str:
    """Return the section of benchmarks.md."""
    return (
        f"{BEGIN}\n## Workflows: a chord's fan-in\n\n"
        "From the end of a chord's last member to the start of its callback, measured inside "
        "the tasks (one host's clock): the last member's finishing transaction (its result, "
        "the callback's counter, the callback made READY), the wake-up and the claim. One "
        "daemon with `--processes 2` and four task threads each; one chord at a time. Each "
        "part costs about what any task's start or end costs on this machine (a no-op task's "
        "run, from its claim to its result stored, takes about 6 ms with the members beside "
        "it); the fan-in itself is four statements in the last member's finishing transaction; "
        f"measured by `python -m bench.fanin`.\n\n{text(results)}\n{END}"
    )


def write_section(results: dict[str, Any], docs: Path) -> None:
    """Put the section into ``benchmarks.md`` (replacing the old one)."""
    put_section(docs / "benchmarks.md", section(results), BEGIN, END, "Benchmarks")


def main(argv: list[str] | None = None) -> int:
    """Run the fan-in benchmark alone (or, with --probe, the producer)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanin", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--docs", metavar="DIR", help="put the table into DIR/benchmarks.md")
    options = parser.parse_args(argv)
    if options.probe:
        print(json.dumps(probe()))
        return 0
    from bench.stack import DB_NAME

    return standalone(
        lambda stack: run(stack.db.url(DB_NAME), stack.env(conn_max_age=60), stack.base),
        text,
        write_section,
        options.docs,
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.exit(main())
