"""When each daemon process died, to the millisecond, seen from outside (pidfds).

A run whose process was killed never records its end: it ended when its process died.
The kernel tells: a pidfd (``os.pidfd_open``) turns readable when its process exits,
whoever killed it (the campaign, the master, the kernel's timer of a lease). Every
process of every daemon is watched from the moment it appears: the daemons' masters are
handed over by the cluster, their workers are found as the masters' children (a worker
needs a second to start before it can run anything; they are looked for every 10 ms).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from pathlib import Path

_SCAN_EVERY = 0.01


def children(pid: int) -> list[int]:
    """Return the pids of *pid*'s children (empty if it is gone)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(n) for n in (task / "children").read_text().split()]
    return found


def _started(pid: int) -> int | None:
    """Return when *pid* started (clock ticks since boot: /proc's starttime), None if gone.

    With it, two processes that had the same pid are told apart: pids are reused within a
    long campaign (pid_max is 32768 on many machines).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: count from the last one.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


class Deaths:
    """Watch processes and record when each one died (epoch seconds): every death of each
    pid, in order, since a pid is reused (see :func:`death_after`)."""

    def __init__(self) -> None:
        self.died: dict[int, list[float]] = {}
        self.seen: set[tuple[int, int]] = set()  # (pid, starttime): one process each
        self._masters: set[int] = set()
        self._fds: dict[int, int] = {}  # fd -> pid
        self._poller = select.poll()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="campaign-deaths", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in list(self._fds):
            os.close(fd)

    def watch_master(self, pid: int) -> None:
        """Watch a daemon's master, and every worker it starts from now on."""
        with self._lock:
            self._masters.add(pid)
            self._watch(pid)

    def _watch(self, pid: int) -> None:
        started = _started(pid)
        if started is None or (pid, started) in self.seen:
            return  # gone before it could be watched (a worker that never ran), or watched
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        if _started(pid) != started:  # the pid was reused in between: look again next scan
            os.close(fd)
            return
        self.seen.add((pid, started))
        self._fds[fd] = pid
        self._poller.register(fd, select.POLLIN)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for master in list(self._masters):
                    for child in children(master):
                        self._watch(child)
            for fd, _ in self._poller.poll(_SCAN_EVERY * 1000):
                with self._lock:
                    pid = self._fds.pop(fd)
                    self.died.setdefault(pid, []).append(time.time())
                    self._poller.unregister(fd)
                    self._masters.discard(pid)
                os.close(fd)
