"""A worker process's side of a supervised daemon (the master is :mod:`socketsvc.process.master`).

The master starts each worker as a fresh ``runsocketservice`` process with
``SOCKETSVC_WORKER`` in its environment: a JSON object naming its slot, the
inherited listening socket's descriptor, the master's pid, the directory the
processes share, and the command-line overrides the master was given. The
worker then

* serves on the inherited socket, woken with ``EPOLLEXCLUSIVE`` so that a new
  connection wakes one process, not all (:class:`~socketsvc.server.listener.Listener`);
* dies with the master (``PR_SET_PDEATHSIG``), so no worker outlives it;
* tells the master what systemd would be told (``READY=1``, ``WATCHDOG=1``,
  ``STOPPING=1``), over the master's notify socket, which the master passes
  as ``NOTIFY_SOCKET``;
* asks to be replaced (``SOCKETSVC_RECYCLE=``) once it served ``MAX_REQUESTS``
  (plus its jitter) or its memory passed ``MAX_WORKER_MEMORY_MB``; the master
  starts its successor and, once that one is ready, drains it;
* writes a line of figures to the shared directory every second, from which
  any worker answers ``rpc.status`` for the whole daemon (with the master's own
  report: its slots, restarts and reloads).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from socketsvc.conf import Config
from socketsvc.db import outages
from socketsvc.procfs import pid_alive, rss_kib
from socketsvc.systemd import notify

log = structlog.get_logger(__name__)

ENVIRONMENT = "SOCKETSVC_WORKER"
# The notify field a worker reports its unreachable database aliases in.
DB_DOWN = "SOCKETSVC_DB_DOWN"
# The notify field a worker asks its siblings to be woken with (a task is ready); the
# master passes it on as SIGUSR1.
WAKE = "SOCKETSVC_WAKE"
_PR_SET_PDEATHSIG = 1
_REPORT_EVERY = 1.0
# A request to be recycled is repeated this often until the master acts on it.
RECYCLE_REPEAT = 30.0
# A report older than this belongs to a process that is gone or wedged.
_REPORT_STALE = 5.0
# The figures each process reports, summed into the daemon's total.
SUMMED = (
    "connections",
    "requests",
    "notifications",
    "errors",
    "workers",
    "busy_workers",
    "queued",
    "rss_kib",
)


@dataclass(frozen=True)
class WorkerInfo:
    """What the master tells a worker process it starts."""

    slot: int
    fd: int
    master_pid: int
    shared_dir: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        """Return the value of ``SOCKETSVC_WORKER``."""
        return json.dumps(asdict(self))


def from_environment() -> WorkerInfo | None:
    """Return this process's WorkerInfo if a master started it (and forget the variable)."""
    raw = os.environ.pop(ENVIRONMENT, None)
    if raw is None:
        return None
    return WorkerInfo(**json.loads(raw))


def die_with_master(master_pid: int) -> None:
    """Have the kernel send SIGTERM when the master dies; exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != master_pid:
        sys.exit("socketsvc: the master process is gone")


class WorkerRole:
    """What a worker process does beside serving: reports, and asks to be recycled."""

    def __init__(self, info: WorkerInfo, config: Config) -> None:
        self.info = info
        self.request_limit = 0
        self.apply(config)
        self.recycle_reason: str | None = None
        self._next_report = 0.0
        self._reported_state: tuple[bool, str] | None = None
        self._next_recycle_request = 0.0
        self._reported_down = ""
        self._report_path = Path(info.shared_dir) / f"worker-{info.slot}-{os.getpid()}.json"

    @property
    def slot(self) -> int:
        """This process's slot among the daemon's worker processes."""
        return self.info.slot

    def apply(self, config: Config) -> None:
        """Take (re)loaded settings: the request limit gets its jitter drawn once."""
        self.config = config
        if config.MAX_REQUESTS:
            self.request_limit = config.MAX_REQUESTS + random.randint(  # noqa: S311
                0, config.MAX_REQUESTS_JITTER
            )
        else:
            self.request_limit = 0

    def tick(
        self, state: tuple[bool, str], build_row: Callable[[], dict[str, Any]], now: float
    ) -> None:
        """Report this process's figures once a second, and at once when its *state* (ready,
        loop state) changed; ask to be recycled when it is time (again, every
        RECYCLE_REPEAT seconds, until the master has a successor ready)."""
        if now < self._next_report and state == self._reported_state:
            return
        self._next_report = now + _REPORT_EVERY
        self._reported_state = state
        row = build_row()
        row["rss_kib"] = rss_kib()
        self._write(row)
        self.report_databases()
        reason = self._due(row)
        if reason is not None and now >= self._next_recycle_request:
            if self.recycle_reason is None:
                log.info("worker_recycle_requested", reason=reason, **_brief(row))
            self.recycle_reason = reason
            self._next_recycle_request = now + RECYCLE_REPEAT
            notify(f"SOCKETSVC_RECYCLE={reason}")

    def forward_wake(self) -> None:
        """Ask the master to wake this daemon's other worker processes (``SOCKETSVC_WAKE=1``):
        a task is ready and every task worker here is busy."""
        notify(f"{WAKE}=1")

    def report_databases(self) -> None:
        """Tell the master which database aliases this process finds down, when that changed
        (``SOCKETSVC_DB_DOWN=``), so its ``STATUS=`` says so."""
        down = ",".join(outages.unavailable())
        if down != self._reported_down:
            self._reported_down = down
            notify(f"{DB_DOWN}={down}")

    def _due(self, row: dict[str, Any]) -> str | None:
        if self.request_limit and row["requests"] >= self.request_limit:
            return "max_requests"
        ceiling = self.config.MAX_WORKER_MEMORY_MB
        if ceiling and row["rss_kib"] > ceiling * 1024:
            return "max_memory"
        return None

    def _write(self, row: dict[str, Any]) -> None:
        write_report(self._report_path, row)

    def forget(self) -> None:
        """Remove this process's report (it stops)."""
        with contextlib.suppress(OSError):
            self._report_path.unlink()

    def whole(self, own: dict[str, Any]) -> dict[str, Any]:
        """Return the daemon's processes (this one fresh, the others as last reported) and total."""
        rows = [own]
        now = time.time()
        for path in sorted(Path(self.info.shared_dir).glob("worker-*.json")):
            if path == self._report_path:
                continue
            try:
                if now - path.stat().st_mtime > _REPORT_STALE:
                    continue
            except OSError:
                continue
            row = _read_report(path)
            if row is not None and pid_alive(int(row.get("pid", 0))):
                rows.append(row)
        rows.sort(key=lambda row: (row.get("slot", 0), row.get("uptime", 0)))
        total = {key: sum(int(row.get(key) or 0) for row in rows) for key in SUMMED}
        return {
            "master_pid": self.info.master_pid,
            "master": _read_report(Path(self.info.shared_dir) / MASTER_REPORT),
            "processes": rows,
            "total": {"processes": len(rows), **total},
        }


# The master's report in the shared directory (see Supervisor.report).
MASTER_REPORT = "master.json"


def write_report(path: Path, row: dict[str, Any]) -> None:
    """Replace the report at *path* with *row* at once (a reader never sees half of it)."""
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".report-", delete=False
        ) as out:
            json.dump(row, out)
        os.replace(out.name, path)
    except OSError as exc:
        log.warning("process_report_not_written", path=str(path), error=str(exc))


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) else None


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row.get(key) for key in ("requests", "rss_kib")}
