"""The system under test: a throwaway database server and two daemons with worker processes.

Each daemon is ``runsocketservice --processes 2`` (a master and two worker processes,
four task workers each); the master and its workers are frozen, thawed and killed together
(each worker is in a process group of its own, so the master is stopped first, and no
worker starts meanwhile). The settings shorten what the faults must outlast: a 6 s lease renewed every
second, recycles every few hundred requests.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from socketsvc.procfs import pid_alive
from tests.campaign.checker import death_after
from tests.campaign.deaths import Deaths, children
from tests.harness import mariadb, postgres
from tests.harness.daemon import REPO, Daemon, manage_env

LEASE = 6.0
SETTINGS: dict[str, Any] = {
    "PROCESSES": 2,
    "TASK_WORKERS": 4,
    "TASK_LEASE": LEASE,
    "TASK_HEARTBEAT": 1.0,
    "TASK_SWEEP_INTERVAL": 10.0,
    "DB_UNAVAILABLE_WAIT": 3.0,
    "DRAIN_TIMEOUT": 5.0,
    "MAX_REQUESTS": 300,
    "MAX_REQUESTS_JITTER": 200,
}
SCHEDULE = "campaign.tick"


class Cluster:
    """Start, fault and heal the database server and the daemons."""

    def __init__(self, base: Path, vendor: str) -> None:
        self.base = base
        self.vendor = vendor
        server_base = base / "db"
        if vendor == "postgresql":
            # postgres runs as its own user, who must be able to enter the directory.
            server_base = Path(f"/tmp/socketsvc-campaign-pg-{os.getpid()}")
            self.server: Any = postgres.PostgreSQL(server_base)
        else:
            self.server = mariadb.MariaDB(server_base)
        self.daemons: dict[str, Daemon] = {}
        self.stopped: set[str] = set()
        self.deaths = Deaths()
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxied_url = ""

    # -- the database --------------------------------------------------------------

    def start_database(self) -> str:
        """Create, start and migrate the server; return its DATABASE_URL."""
        self.server.install()
        self.server.start()
        module = postgres if self.vendor == "postgresql" else mariadb
        module.migrate(self.server)
        self._start_proxy()
        return str(self.server.url())

    def _start_proxy(self) -> None:
        """The daemons reach the server through a proxy that can cut a claim's commit
        (tests/harness/commitcut.py), in a process of its own; the campaign's own queries do not."""
        server = self.server
        if self.vendor == "postgresql":
            listen = self.base / "proxy" / ".s.PGSQL.5432"
            self.proxied_url = server.url().replace(
                quote(server.socket_dir, safe=""), quote(str(listen.parent), safe="")
            )
        else:
            listen = self.base / "proxy" / "db.sock"
            self.proxied_url = server.url().replace(
                quote(server.socket, safe=""), quote(str(listen), safe="")
            )
        listen.parent.mkdir()
        with (self.base / "proxy.out").open("w") as log:
            self.proxy = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tests.harness.commitcut", "--listen", str(listen)),
                    *("--upstream", server.socket, "--vendor", self.vendor),
                ],
                cwd=REPO,
                env=manage_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not listen.exists():
            assert self.proxy.poll() is None, (self.base / "proxy.out").read_text()
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)

    def cut_commit(self) -> None:
        """Have the proxy cut the next claim's commit (whichever daemon makes it)."""
        assert self.proxy is not None
        self.proxy.send_signal(signal.SIGUSR1)

    def commits_cut(self) -> list[tuple[float, str, str]]:
        """Return the claims whose commits the proxy cut: (when, the task, the claimant)."""
        out = self.base / "proxy.out"
        lines = out.read_text().splitlines() if out.exists() else []
        cuts = []
        for line in lines:
            parts = line.split()
            if parts[:1] == ["cut"] and len(parts) == 5:
                cuts.append((float(parts[2]), parts[3], parts[4]))
        return cuts

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        return list(self.server.query(sql, args, db="socketsvc_test"))

    # -- the daemons ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.proxied_url,
            "TEST_CONN_MAX_AGE": "60",
            "TEST_CONN_HEALTH_CHECKS": "1",
            "CAMPAIGN_PERIODIC": "1",
        }

    def start_daemon(self, name: str) -> Daemon:
        """Start daemon *name* (again) and wait until it answers (retrying while the socket
        is still held by what is left of the one before)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return self._start_daemon(name)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _start_daemon(self, name: str) -> Daemon:
        daemon = Daemon(
            str(self.base / f"{name}.sock"),
            self.env(),
            settings={**SETTINGS, "SCHEDULES": [SCHEDULE]},
        )
        daemon.log_path = self.base / f"{name}.{int(time.time() * 1000)}.log"
        daemon.start()
        self.deaths.watch_master(daemon.pid)
        self.daemons[name] = daemon
        return daemon

    def alive(self, name: str) -> bool:
        daemon = self.daemons.get(name)
        return daemon is not None and daemon.process is not None and daemon.process.poll() is None

    def workers(self, name: str) -> list[int]:
        return children(self.daemons[name].pid) if self.alive(name) else []

    def freeze(self, name: str) -> None:
        """SIGSTOP the master, then its workers (each in a process group of its own)."""
        master = self.daemons[name].pid
        os.kill(master, signal.SIGSTOP)  # first: it starts no worker meanwhile
        for pid in children(master):
            _signal(pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        """SIGCONT the workers, then the master."""
        master = self.daemons[name].pid
        for pid in children(master):
            _signal(pid, signal.SIGCONT)
        _signal(master, signal.SIGCONT)

    def kill_daemon(self, name: str) -> None:
        """SIGKILL the master and every worker at once (as a host losing power would)."""
        daemon = self.daemons[name]
        master = daemon.pid
        os.kill(master, signal.SIGSTOP)
        for pid in children(master):
            _signal(pid, signal.SIGKILL)
        os.kill(master, signal.SIGKILL)
        assert daemon.process is not None
        daemon.process.wait(30)

    def stop_daemons(self) -> None:
        """SIGTERM every daemon and wait for it (SIGKILL after a while)."""
        for name in list(self.daemons):
            if self.alive(name):
                self.daemons[name].stop(timeout=60)

    def unsettled(self) -> list[str]:
        """Describe each task still READY or RUNNING: its claim, the claimant's row and
        process, and its runs (what a settling that never came needs to be understood)."""
        lines = []
        for task_id, status, claimed_by, claims in self.query(
            "SELECT id, status, claimed_by, claims FROM socketsvc_task "
            "WHERE status IN ('READY', 'RUNNING')"
        ):
            lines.append(f"{task_id} {status}, claim {claims} by {claimed_by or '-'}")
            for pid, stopped_at, expires_in in self.query(
                "SELECT pid, stopped_at, "
                f"{self.server.seconds_until('lease_expires_at')} "
                "FROM socketsvc_worker WHERE id = %s",
                [claimed_by],
            ):
                alive = "alive" if pid_alive(int(pid)) else "gone"
                lines.append(
                    f"  its daemon: pid {pid} ({alive}), stopped_at {stopped_at}, "
                    f"lease expires in {float(expires_in):.1f} s"
                )
            for attempt, pid, started, ended, outcome in self.query(
                "SELECT attempt, pid, started, ended, outcome FROM testapp_campaignrun "
                "WHERE task_id = %s ORDER BY started",
                [task_id],
            ):
                died = death_after(int(pid), float(started), self.deaths.died)
                lines.append(
                    f"  run {attempt}: pid {pid}, started {float(started):.3f}, ended "
                    f"{ended if ended is None else f'{float(ended):.3f}'} {outcome}, "
                    f"process died {f'{died:.3f}' if died != math.inf else 'not seen'}"
                )
        return lines

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON line every daemon wrote (its masters and workers)."""
        events = []
        for path in sorted(self.base.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def close(self) -> None:
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            self.proxy.wait(10)
        for name in list(self.daemons):
            if self.alive(name):
                self.thaw(name)
                self.daemons[name].kill()
        self.deaths.stop()
        self.server.stop()

    def remove(self) -> None:
        """Remove the database server's files (a PostgreSQL one lives outside the base)."""
        shutil.rmtree(self.server.base, ignore_errors=True)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it died meanwhile
