"""The faults, one after another at random moments, each written down with its times.

Every kind comes once in each round of the kinds (shuffled by the seed), so a short run
still meets them all; the pause between two faults and each fault's targets and
durations are drawn from the same seeded generator, so a seed replays the same schedule
(what the system does in between is up to the machine).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.campaign.cluster import LEASE, Cluster

KINDS = (
    "kill_worker",
    "kill_daemon",
    "stop_daemon",
    "stop_worker",
    "restart_database",
    "kill_sessions",
    "cut_commit",
    "sighup",
)


@dataclass
class Fault:
    kind: str
    target: str
    began: float
    ended: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


class Nemesis:
    """Injects the faults on a thread of its own until stopped, then heals everything."""

    def __init__(self, cluster: Cluster, seed: int) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self.failed = 0  # faults that could not be injected (an error of the campaign's own)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="campaign-nemesis")
        self._round: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop injecting (the fault under way finishes) and heal: every daemon running and
        not stopped, the database up."""
        self._stop.set()
        self._thread.join(120)
        cluster = self.cluster
        for name in list(cluster.daemons):
            if cluster.alive(name):
                cluster.thaw(name)
            else:
                cluster.start_daemon(name)

    def _next_kind(self) -> str:
        if not self._round:
            self._round = list(KINDS)
            self.rng.shuffle(self._round)
        return self._round.pop()

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(1.0, 3.0)):
            kind = self._next_kind()
            name = self.rng.choice(sorted(self.cluster.daemons))
            fault = Fault(kind, name, time.time())
            try:
                getattr(self, kind)(fault)
            except Exception as exc:  # the campaign goes on; the table shows it
                fault.detail["error"] = repr(exc)
                self.failed += 1
            fault.ended = time.time()
            self.faults.append(fault)

    # -- the faults ---------------------------------------------------------------------

    def _pause(self, seconds: float) -> None:
        time.sleep(seconds)  # a fault's own duration, drawn from the seed

    def kill_worker(self, fault: Fault) -> None:
        workers = self.cluster.workers(fault.target)
        if workers:
            pid = self.rng.choice(sorted(workers))
            fault.detail["pid"] = pid
            signal_quietly(pid, signal.SIGKILL)

    def kill_daemon(self, fault: Fault) -> None:
        cluster = self.cluster
        if cluster.alive(fault.target):
            fault.detail["pid"] = cluster.daemons[fault.target].pid
            cluster.kill_daemon(fault.target)
        self._pause(self.rng.uniform(0.5, 3.0))
        cluster.start_daemon(fault.target)

    def stop_daemon(self, fault: Fault) -> None:
        """SIGSTOP the master and its workers for longer than the lease, then SIGCONT."""
        cluster = self.cluster
        if not cluster.alive(fault.target):
            return
        seconds = LEASE + self.rng.uniform(1.0, 3.0)
        fault.detail["seconds"] = round(seconds, 3)
        cluster.freeze(fault.target)
        try:
            self._pause(seconds)
        finally:
            cluster.thaw(fault.target)

    def stop_worker(self, fault: Fault) -> None:
        workers = self.cluster.workers(fault.target)
        if not workers:
            return
        pid = self.rng.choice(sorted(workers))
        seconds = LEASE + self.rng.uniform(1.0, 3.0)
        fault.detail.update(pid=pid, seconds=round(seconds, 3))
        signal_quietly(pid, signal.SIGSTOP)
        self._pause(seconds)
        signal_quietly(pid, signal.SIGCONT)

    def restart_database(self, fault: Fault) -> None:
        fault.target = "database"
        self.cluster.server.stop()
        self._pause(self.rng.uniform(0.3, 2.0))
        self.cluster.server.start()

    def kill_sessions(self, fault: Fault) -> None:
        fault.target = "database"
        try:
            fault.detail["sessions"] = len(self.cluster.server.kill_sessions())
        except Exception as exc:  # a session ended on its own while it was being killed
            fault.detail["error"] = repr(exc)

    def cut_commit(self, fault: Fault) -> None:
        """The next claim's commit reaches the server, its reply never the daemon."""
        fault.target = "database"
        self.cluster.cut_commit()

    def sighup(self, fault: Fault) -> None:
        cluster = self.cluster
        if cluster.alive(fault.target):
            signal_quietly(cluster.daemons[fault.target].pid, signal.SIGHUP)


def signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it died meanwhile (a fault of its own)
