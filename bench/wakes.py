"""How fast a task starts when the wake-up lands where no task worker is free, and what the
watch for tasks committed elsewhere costs an idle daemon.

    .venv/bin/python -m bench.wakes              # prints the tables (about 4 minutes)
    .venv/bin/python -m bench.wakes --docs       # and writes their section of docs/benchmarks.md

On a throwaway MariaDB and a throwaway PostgreSQL (the suite's own servers), with the
suite's test app (``tests.testapp.tasks``: ``add``, and ``hold`` waiting at a gate):

* ``sibling``: one daemon with ``--processes 2`` and one task worker per process, one of
  them held busy; the producer wakes the daemon over its socket, so about half the
  wake-ups land on the busy process, which passes them on through the master;
* ``other daemon``: two daemons (two hosts, as far as they know), one task worker each,
  the first held busy; the producer wakes the busy one, and the other must hear of the task
  through the database (PostgreSQL's NOTIFY, MySQL's look every ``TASK_WAKE_POLL``);
* ``no daemon``: the producer's wake-up reaches no daemon at all (a web host without one);
  an idle daemon elsewhere hears of the task through the database.

Each task is enqueued alone (the previous one finished, then a random pause), and its
latency is from the commit (a callback the producer registers before ``enqueue()``'s own)
to ``started_at``, the claiming daemon's clock on the same machine. Then each daemon sits
idle for ``IDLE_SECONDS``: its CPU and the statements it sent are counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.model import percentile
from bench.probe import run_json
from bench.stack import cpu_seconds
from tests.harness.docpage import put_section

BEGIN, END = "<!-- bench:wakes -->", "<!-- /bench:wakes -->"
IDLE_SECONDS = 20.0
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Latency:
    scenario: str
    vendor: str
    samples: list[float]

    def row(self) -> list[str]:
        ms = sorted(self.samples)
        return [
            self.scenario,
            self.vendor,
            str(len(ms)),
            f"{percentile(ms, 0.5):.1f}",
            f"{percentile(ms, 0.99):.1f}",
            f"{ms[-1]:.1f}",
        ]


@dataclass
class IdleCost:
    vendor: str
    setting: str
    processes: int
    cpu_percent: float
    statements_per_s: float

    def row(self) -> list[str]:
        return [
            self.vendor,
            self.setting,
            str(self.processes),
            f"{self.cpu_percent:.2f}",
            f"{self.statements_per_s:.1f}",
        ]


# -- the producer (a process of its own, with the suite's settings) ----------------------


def produce(count: int, pause: float, seed: int) -> list[float]:
    """Enqueue *count* ``add`` tasks one at a time; return commit -> started, in ms."""
    import django

    django.setup()
    from django.db import transaction

    from tests.testapp.tasks import add

    rng = random.Random(seed)  # noqa: S311 (not security)
    samples = []
    for n in range(count):
        time.sleep(rng.uniform(0.0, pause))
        committed: list[float] = []
        with transaction.atomic():
            transaction.on_commit(lambda stamps=committed: stamps.append(time.time()))
            result = add.enqueue(n, 1)
        deadline = time.monotonic() + 60
        while True:
            done = add.get_result(result.id)
            if done.started_at is not None and done.status in ("SUCCESSFUL", "FAILED"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"task {result.id} did not finish within a minute")
            time.sleep(0.002)
        samples.append((done.started_at.timestamp() - committed[0]) * 1000)
    return samples


# -- the harness -------------------------------------------------------------------------


def _servers(base: Path) -> dict[str, Any]:
    from tests.harness import mariadb, postgres

    servers: dict[str, Any] = {}
    maria = mariadb.MariaDB(base / "mariadb")
    maria.install()
    maria.start()
    mariadb.migrate(maria)
    servers["mariadb"] = maria
    pg = postgres.PostgreSQL(Path(tempfile.mkdtemp(prefix="socketsvc-wakes-pg-")))
    pg.install()
    pg.start()
    postgres.migrate(pg)
    servers["postgresql"] = pg
    return servers


def _daemon(base: Path, name: str, url: str, *args: str, **settings: Any) -> Any:
    from tests.harness.daemon import Daemon

    env = {"DATABASE_URL": url, "TEST_CONN_MAX_AGE": "60"}
    daemon = Daemon(
        str(base / f"{name}.sock"), env, *args, settings={"TASK_WORKERS": 1, **settings}
    )
    return daemon.start(ready=True)


def _producer(url: str, socket_path: str, count: int) -> list[float]:
    from tests.harness.daemon import manage_env

    env = manage_env({"DATABASE_URL": url, "SOCKETSVC_SOCKET": socket_path})
    return list(run_json(["bench.wakes", "--produce", str(count)], env, "the producer"))


def _hold_one(url: str, socket_path: str, gate: Any) -> None:
    """Enqueue a task that waits at *gate*; return once it does (its worker is busy)."""
    from tests.harness.taskclient import TaskClient

    client = TaskClient(url, socket_path)
    try:
        client.enqueue("hold", gate.path, 600.0)
        gate.wait_for(gate.arrived + 1, timeout=60)
    finally:
        client.close()


def _clear(server: Any) -> None:
    for table in ("socketsvc_task", "socketsvc_worker"):
        server.query(f"DELETE FROM {table}", db="socketsvc_test")  # noqa: S608 (fixed names)


def latencies(base: Path, server: Any, vendor: str, count: int) -> list[Latency]:
    """Measure the three scenarios on one database."""
    from tests.harness.gate import Gate

    url = server.url()
    found: list[Latency] = []
    with Gate(base / f"{vendor}-gate.sock") as gate:
        _clear(server)
        daemon = _daemon(base, f"{vendor}-2p", url, "--processes", "2")
        try:
            _hold_one(url, daemon.socket, gate)
            found.append(Latency("sibling", vendor, _producer(url, daemon.socket, count)))
        finally:
            gate.open()
            daemon.stop()
        _clear(server)
        busy = _daemon(base, f"{vendor}-a", url)
        other = None
        try:
            _hold_one(url, busy.socket, gate)
            other = _daemon(base, f"{vendor}-b", url)
            found.append(Latency("other daemon", vendor, _producer(url, busy.socket, count)))
            nowhere = str(base / "nobody-listens.sock")
            found.append(Latency("no daemon", vendor, _producer(url, nowhere, count)))
        finally:
            gate.open()
            for each in (busy, other):
                if each is not None:
                    each.stop()
    return found


def _statements(server: Any, vendor: str) -> int:
    if vendor == "mariadb":
        return int(server.query("SHOW GLOBAL STATUS LIKE 'Questions'")[0][1])
    row = server.query(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'socketsvc_test'"
    )
    return int(row[0][0])


def idle_cost(
    base: Path, server: Any, vendor: str, poll: float | None, processes: int = 1
) -> IdleCost:
    """One daemon with two task workers (per process), idle: its CPU (all its processes) and
    the statements the server counted."""
    _clear(server)
    settings: dict[str, Any] = {} if poll is None else {"TASK_WAKE_POLL": poll}
    args = ("--processes", str(processes)) if processes > 1 else ()
    daemon = _daemon(base, f"{vendor}-idle", server.url(), *args, TASK_WORKERS=2, **settings)
    try:
        time.sleep(2.0)  # the start-up's own statements are over
        cpu, statements, began = cpu_seconds(daemon.pid), _statements(server, vendor), time.time()
        time.sleep(IDLE_SECONDS)
        used = cpu_seconds(daemon.pid) - cpu
        counted = _statements(server, vendor) - statements - 1  # our own SHOW/SELECT
        took = time.time() - began
    finally:
        daemon.stop()
    if vendor == "postgresql":
        setting = "LISTEN"
    else:
        setting = f"TASK_WAKE_POLL={poll if poll is not None else 0.025:g}"
    return IdleCost(vendor, setting, processes, 100 * used / took, counted / took)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def section(found: list[Latency], costs: list[IdleCost], count: int) -> str:
    return "\n".join(
        [
            BEGIN,
            "## Wake-ups that land where every task worker is busy",
            "",
            "`.venv/bin/python -m bench.wakes` (see its docstring for the set-up): "
            f"{count} tasks per row, each enqueued alone; milliseconds from the commit to "
            "`started_at`. The target is 50 ms at the 99th percentile.",
            "",
            table(
                ["scenario", "database", "tasks", "p50 ms", "p99 ms", "max ms"],
                [row.row() for row in found],
            ),
            "",
            f"An idle daemon (two task workers per process, nothing to do) over "
            f"{IDLE_SECONDS:g} s: the CPU of all its processes (of one core), and the "
            "statements the server counted (the heartbeats' included). One process per "
            "daemon watches the database, whatever `--processes`:",
            "",
            table(
                ["database", "watch", "processes", "daemon CPU %", "statements/s"],
                [cost.row() for cost in costs],
            ),
            END,
        ]
    )


def write_section(text: str, docs: Path) -> None:
    put_section(docs / "benchmarks.md", text, BEGIN, END, "Benchmarks")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wakes", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=200, help="tasks per scenario (200)")
    parser.add_argument("--docs", nargs="?", const="docs", default=None, metavar="DIR")
    parser.add_argument("--produce", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.produce is not None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        print(json.dumps(produce(options.produce, 0.03, seed=7)))
        return 0
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    base = Path(tempfile.mkdtemp(prefix="sw", dir="/tmp"))
    servers: dict[str, Any] = {}
    try:
        print(f"starting MariaDB and PostgreSQL in {base}", flush=True)
        servers = _servers(base)
        found: list[Latency] = []
        costs: list[IdleCost] = []
        for vendor, server in servers.items():
            print(f"wake-ups on {vendor}", flush=True)
            found += latencies(base, server, vendor, options.count)
            print(f"an idle daemon on {vendor}", flush=True)
            costs.append(idle_cost(base, server, vendor, None))
            costs.append(idle_cost(base, server, vendor, None, processes=2))
            if vendor == "mariadb":
                costs.append(idle_cost(base, server, vendor, 0))
        text = section(found, costs, options.count)
        print(text)
        if options.docs is not None:
            write_section(text, Path(options.docs))
            print(f"wrote the wake-up section of {options.docs}/benchmarks.md")
        return 0
    finally:
        for server in servers.values():
            server.stop()
            shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
