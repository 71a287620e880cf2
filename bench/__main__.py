"""Benchmark socketsvc against the Python floor, gunicorn, Celery and huey, in one run.

    .venv/bin/python -m bench            # full run: prints the table, writes docs/
    .venv/bin/python -m bench --smoke    # seconds: socketsvc and the floor only, writes nothing

Every server does the same unit of work (one product by primary key through
the ORM on a throwaway MariaDB, its name back), each client is a process of its
own, and the rounds are interleaved so drift hits every server alike. Each
figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import hotpath, report
from bench.goals import socketsvc_clean
from bench.measure import dead_connections, measure_idle_connections, run_rounds
from bench.model import FULL, SMOKE, Results
from bench.servers import start_servers, wait_ready
from bench.stack import Stack

# The targets whose failed requests after dead DB sessions are counted.
DEAD_CONNECTION_TARGETS = (
    "bare-orm",
    "bare-orm-60",
    "socketsvc",
    "socketsvc-0",
    "socketsvc-pingall",
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 if socketsvc failed a request)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
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
            stack, [by_name[n] for n in DEAD_CONNECTION_TARGETS], ids, plan
        )
        profile: dict[str, Any] | None = None
        if plan.full and not options.no_profile:
            print("profiling the hot path", flush=True)
            profile = hotpath.run(stack, by_name["socketsvc"], by_name["socketsvc-0"], ids)
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
        )
        print(report.text(results))
        if plan.full:
            mariadb = str(stack.db.query("SELECT VERSION()")[0][0])
            report.write(results, Path(options.docs), mariadb)
            print(f"wrote {options.docs}/benchmarks.md and benchmarks.png")
        return 0 if socketsvc_clean(results) else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
