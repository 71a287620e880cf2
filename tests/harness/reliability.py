"""Faults under load: clients call continuously while the database is killed and restarted.

Used by tests/db/test_reliability.py (a short slice in CI) and as a script for the
long run that writes docs/reliability.md::

    .venv/bin/python -m tests.harness.reliability --duration 60 --write docs/reliability.md
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socketsvc.protocol import DATABASE_UNAVAILABLE, HANDLER_ERROR
from tests.harness.daemon import Daemon, RawClient
from tests.harness.docpage import put_section
from tests.harness.mariadb import MariaDB, migrate

CLIENTS = 8
PIPELINE = 4
# (method, params, share): the mix each client draws from.
MIX: list[tuple[str, Any, float]] = [
    ("testapp.count_notes", {}, 0.45),
    ("testapp.write_note", {"text": "load"}, 0.15),
    ("testapp.add", [2, 3], 0.2),
    ("rpc.ping", None, 0.1),
    ("testapp.fail", ["injected crash"], 0.1),
]
EXPECTED_ERRORS = {HANDLER_ERROR, DATABASE_UNAVAILABLE}


@dataclass
class Resources:
    """What the daemon holds: open fds, threads, resident memory, DB sessions."""

    fds: int
    threads: int
    rss_kib: int
    db_sessions: int

    @classmethod
    def of(cls, pid: int, server: MariaDB) -> Resources:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return cls(
            fds=_settled_fds(pid),
            threads=int(fields["Threads"]),
            rss_kib=int(fields["VmRSS"].split()[0]),
            db_sessions=len(server.sessions()),
        )


@dataclass
class Report:
    """What happened to every request sent."""

    duration: float = 0.0
    sent: int = 0
    ok: int = 0
    errors: collections.Counter[int] = field(default_factory=collections.Counter)
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    faults: list[str] = field(default_factory=list)
    sessions_killed: int = 0
    # (monotonic time sent, seconds to the last reply) of each pipelined batch.
    batches: list[tuple[float, float]] = field(default_factory=list)
    # When the database restart began and ended (monotonic), if there was one.
    restart: tuple[float, float] | None = None
    before: Resources | None = None
    after: Resources | None = None

    @property
    def unexpected_errors(self) -> int:
        return sum(n for code, n in self.errors.items() if code not in EXPECTED_ERRORS)

    def merge(self, other: Report) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.errors.update(other.errors)
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.mismatched += other.mismatched
        self.batches += other.batches

    def p99_ms(self, start: float | None = None, end: float | None = None) -> float | None:
        """Return the p99 batch round trip (ms) of batches sent within [start, end]."""
        times = sorted(
            seconds
            for sent, seconds in self.batches
            if (start is None or sent >= start) and (end is None or sent <= end)
        )
        if not times:
            return None
        return 1000 * times[min(len(times) - 1, int(0.99 * len(times)))]

    def p99_during_restart_ms(self) -> float | None:
        """Return the p99 of batches sent while the database restarted (and 1 s after)."""
        if self.restart is None:
            return None
        return self.p99_ms(self.restart[0], self.restart[1] + 1.0)


def _settled_fds(pid: int, timeout: float = 5.0) -> int:
    """Count open fds once the count stops falling (the last client's close is in flight)."""
    count = len(os.listdir(f"/proc/{pid}/fd"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = len(os.listdir(f"/proc/{pid}/fd"))
        if again >= count:
            return count
        count = again
    return count


def _pick(rng: random.Random) -> tuple[str, Any]:
    roll = rng.random()
    for method, params, share in MIX:
        roll -= share
        if roll <= 0:
            return method, params
    return MIX[0][0], MIX[0][1]


def _client(path: str, k: int, stop: threading.Event, report: Report) -> None:
    """Pipeline PIPELINE requests at a time; check each id is answered exactly once."""
    rng = random.Random(k)
    serial = 0
    with RawClient(path, timeout=60) as client:
        while not stop.is_set():
            outstanding: dict[str, str] = {}
            batch_sent = time.monotonic()
            for _ in range(PIPELINE):
                serial += 1
                method, params = _pick(rng)
                request_id = f"{k}-{serial}"
                message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
                if params is not None:
                    message["params"] = params
                client.request(message)
                outstanding[request_id] = method
                report.sent += 1
            seen: set[str] = set()
            for _ in range(len(outstanding)):
                try:
                    reply = client.reply()
                except (EOFError, OSError):
                    report.lost += len(outstanding) - len(seen)
                    return
                request_id = reply.get("id")
                if request_id in seen:
                    report.duplicated += 1
                elif request_id not in outstanding:
                    report.mismatched += 1
                seen.add(request_id)
                if "error" in reply:
                    report.errors[reply["error"]["code"]] += 1
                else:
                    report.ok += 1
            report.batches.append((batch_sent, time.monotonic() - batch_sent))


def _quiesce(daemon: Daemon, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = daemon.call("rpc.status")
        # The status call itself holds one connection.
        if status["busy_workers"] == 0 and status["connections"] <= 1 and status["queued"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the daemon did not settle after the load")


FAULTS = ("kill", "restart")


def run_load(
    daemon: Daemon,
    server: MariaDB,
    duration: float,
    faults: tuple[str, ...] = FAULTS,
    restart_pause: float = 0.0,
) -> Report:
    """Run CLIENTS clients for *duration* seconds, injecting *faults* on a schedule:
    ``kill`` (every DB session KILLed at a quarter), ``restart`` (MariaDB at half)."""
    warm = Report()
    warm_stop = threading.Event()
    warm_thread = threading.Thread(target=_client, args=(daemon.socket, 99, warm_stop, warm))
    warm_thread.start()
    time.sleep(min(1.0, duration / 10))  # warm-up traffic, not a wait for a condition
    warm_stop.set()
    warm_thread.join(60)
    _quiesce(daemon)
    report = Report(before=Resources.of(daemon.pid, server))

    stop = threading.Event()
    parts = [Report() for _ in range(CLIENTS)]
    threads = [
        threading.Thread(target=_client, args=(daemon.socket, k, stop, parts[k]))
        for k in range(CLIENTS)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    schedule = [(0.25, "kill DB sessions")] if "kill" in faults else []
    schedule += [(0.5, "restart MariaDB")] if "restart" in faults else []
    for at, fault in schedule:
        pause = started + at * duration - time.monotonic()
        if pause > 0:
            stop.wait(pause)
        if fault == "kill DB sessions":
            killed = server.kill_sessions()
            report.sessions_killed = len(killed)
            report.faults.append(
                f"t={time.monotonic() - started:.1f}s: KILL {len(killed)} sessions"
            )
        else:
            began = time.monotonic()
            server.stop()
            stop.wait(restart_pause)  # a slower restart, or a failover
            server.start()
            report.restart = (began, time.monotonic())
            report.faults.append(
                f"t={began - started:.1f}s: MariaDB restarted "
                f"(down {report.restart[1] - began:.1f} s)"
            )
    remaining = started + duration - time.monotonic()
    if remaining > 0:
        stop.wait(remaining)
    stop.set()
    for thread in threads:
        thread.join(120)
    report.duration = time.monotonic() - started
    for part in parts:
        report.merge(part)
    _quiesce(daemon)
    report.after = Resources.of(daemon.pid, server)
    return report


def sigkill_and_restart(daemon: Daemon, env: dict[str, str]) -> tuple[Daemon, bool]:
    """SIGKILL the daemon, start a new one on the same path; return it and whether clients got in."""
    daemon.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    daemon.process.wait(10)  # type: ignore[union-attr]
    stale = os.path.exists(daemon.socket)
    successor = Daemon(daemon.socket, env)
    successor.start()
    served = successor.call("testapp.add", 1, 1) == 2
    return successor, stale and served


# -- the long run, as a script -------------------------------------------------


def _table(report: Report) -> list[str]:
    before, after = report.before, report.after
    assert before is not None and after is not None
    answered = report.ok + sum(report.errors.values())
    during = report.p99_during_restart_ms()
    return [
        *[f"- {fault}" for fault in report.faults],
        "",
        "| requests | count |",
        "|---|---|",
        f"| sent | {report.sent} |",
        f"| answered | {answered} |",
        f"| succeeded | {report.ok} |",
        f"| failed with a clear error: handler raised (-32000) | {report.errors[HANDLER_ERROR]} |",
        f"| failed with a clear error: database unavailable (-32001) "
        f"| {report.errors[DATABASE_UNAVAILABLE]} |",
        f"| failed with any other error | {report.unexpected_errors} |",
        f"| **lost (no reply)** | **{report.lost}** |",
        f"| duplicated replies | {report.duplicated} |",
        f"| replies with an unknown id | {report.mismatched} |",
        f"| p99 of a pipelined batch, whole run | {_ms(report.p99_ms())} |",
        f"| p99 of a batch sent during the restart (and 1 s after) | {_ms(during)} |",
        "",
        "| daemon resources | before the load | after the load | bound |",
        "|---|---|---|---|",
        f"| open file descriptors | {before.fds} | {after.fds} | no growth |",
        f"| threads | {before.threads} | {after.threads} | no growth |",
        f"| DB server sessions | {before.db_sessions} | {after.db_sessions} | at most 4 (workers) |",
        f"| RSS | {before.rss_kib / 1024:.1f} MiB | {after.rss_kib / 1024:.1f} MiB "
        f"| +{RSS_BOUND_KIB / 1024:.0f} MiB |",
        "",
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _markdown(runs: list[tuple[str, Report]], restart_ok: bool, command: str) -> str:
    duration = runs[0][1].duration
    lines = [
        BEGIN,
        "## Faults under load",
        "",
        f"{CLIENTS} clients, each pipelining {PIPELINE} requests at a time, called the daemon",
        f"for {duration:.0f} s on a throwaway MariaDB (CONN_MAX_AGE=60, 4 workers).",
        "The mix: 45% ORM read, 15% ORM write, 20% no-DB call, 10% `rpc.ping`,",
        "10% a handler that raises. A KILL of every session fails the statements it",
        "interrupts (-32001, never retried: they may have run); a restart makes connects",
        "fail, and with `DB_UNAVAILABLE_WAIT` those requests wait for the server instead.",
        "",
    ]
    for title, report in runs:
        lines += [f"### {title}", "", *_table(report)]
    lines += [
        f"SIGKILL of the daemon, then a restart on the same path: stale socket removed "
        f"and clients served: {'yes' if restart_ok else 'NO'}.",
        "",
        f"Run on a {os.cpu_count()}-core machine ({platform.machine()}), Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}, with",
        f"`{command}`.",
        "The same scenario runs for a few seconds in the test suite (`tests/db/test_reliability.py`,",
        "`tests/db/test_outages.py`).",
        END,
    ]
    return "\n".join(lines)


BEGIN, END = "<!-- reliability:load -->", "<!-- /reliability:load -->"


def write_section(text: str, page: Path) -> None:
    """Put the section into *page* between its markers (replacing the old one)."""
    put_section(page, text, BEGIN, END, "Reliability")


RSS_BOUND_KIB = 16 * 1024


def _run(  # noqa: PLR0917
    server: MariaDB,
    base: Path,
    duration: float,
    faults: tuple[str, ...],
    wait: float,
    pause: float,
) -> tuple[Daemon, Report]:
    env = {"DATABASE_URL": server.url(), "TEST_CONN_MAX_AGE": "60"}
    daemon = Daemon(str(base / "s.sock"), env, settings={"DB_UNAVAILABLE_WAIT": wait}).start()
    return daemon, run_load(daemon, server, duration, faults, pause)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--faults", default="kill,restart", help="comma-separated: kill, restart (default both)"
    )
    parser.add_argument(
        "--restart-pause",
        type=float,
        default=0.0,
        help="seconds MariaDB stays down during the restart (default: a plain restart)",
    )
    parser.add_argument(
        "--compare-without-wait",
        action="store_true",
        help="run the load a second time with DB_UNAVAILABLE_WAIT=0 and show both",
    )
    parser.add_argument("--write", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    faults = tuple(name for name in args.faults.split(",") if name)

    base = Path(tempfile.mkdtemp(prefix="rel", dir="/tmp"))
    server = MariaDB(base / "db")
    daemon = None
    try:
        server.install()
        server.start()
        migrate(server)
        daemon, report = _run(server, base, args.duration, faults, 5.0, args.restart_pause)
        runs = [("DB_UNAVAILABLE_WAIT=5 (the default)", report)]
        if args.compare_without_wait:
            daemon.stop()
            daemon, bare = _run(server, base, args.duration, faults, 0.0, args.restart_pause)
            runs.append(("DB_UNAVAILABLE_WAIT=0 (no waiting)", bare))
        env = {"DATABASE_URL": server.url(), "TEST_CONN_MAX_AGE": "60"}
        daemon, restart_ok = sigkill_and_restart(daemon, env)
        command = "python -m tests.harness.reliability " + " ".join(sys.argv[1:])
        text = _markdown(runs, restart_ok, command)
        print(text)
        print(json.dumps({title: dict(run.errors) for title, run in runs}), file=sys.stderr)
        if args.write:
            write_section(text, args.write)
        clean = all(run.lost == 0 and run.unexpected_errors == 0 for _, run in runs)
        return 0 if clean else 1
    finally:
        if daemon is not None:
            daemon.kill()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
