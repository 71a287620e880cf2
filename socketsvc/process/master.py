"""The master of a daemon with worker processes: it starts them, watches them, replaces them.

With ``PROCESSES`` above 1 (or ``MAX_REQUESTS`` / ``MAX_WORKER_MEMORY_MB``
set), ``runsocketservice`` binds the socket (or takes it from systemd), holds
the instance lock, and then serves nothing itself: it starts one worker
process per slot, each a fresh ``runsocketservice`` (a new interpreter: no
database connection, lock or thread is inherited) that accepts on the shared
socket (see :mod:`socketsvc.process.worker`). The master

* restarts a worker that exits unasked (exit status, signal, a crash in a C
  extension), after a pause that doubles while workers die young (up to 30 s),
  and logs why; the kernel closes that worker's connections, so a request it
  was running gets an error at the client, never silence;
* replaces a worker that asks for it (``MAX_REQUESTS``, memory ceiling): the
  successor starts first, and only once it is ready does the old one drain;
* on SIGHUP replaces the workers one by one the same way (new code, new
  settings; the old one drains, so no request fails), then says ``READY=1``;
* on SIGTERM/SIGINT tells every worker to drain and waits for them (a second
  signal tells them to stop at once);
* alone talks to systemd: ``READY=1`` once every slot's worker is ready,
  ``STATUS=``, ``STOPPING=1``, and ``WATCHDOG=1`` only while every worker has
  pinged the master within its own watchdog period (a worker pings only while
  its handler threads make progress, so a wedged or stopped worker stops the
  watchdog and systemd restarts the service).

Its length is one state machine: which worker serves each slot, which one
replaces it (recycling, a reload's rotation), which are draining, and what
each exit means depend on each other, and read best in one place; starting a
process and hearing it are in :mod:`socketsvc.process.spawn`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from socketsvc.conf import Config, reloaded
from socketsvc.logsetup import reopen_log_files
from socketsvc.observe import events
from socketsvc.process.spawn import (
    Inbox,
    Worker,
    exit_reason,
    settings_module,
    start_process,
    worker_environment,
)
from socketsvc.process.worker import DB_DOWN, MASTER_REPORT, WAKE, WorkerInfo, write_report
from socketsvc.procfs import rss_kib
from socketsvc.server.listener import Listener
from socketsvc.server.signals import WAKE_SIGNAL, SignalWatch
from socketsvc.systemd import Notifier

log = structlog.get_logger(__name__)

# Workers ping the master every half of this (the WATCHDOG_USEC they are given);
# one silent for PING_GRACE is unresponsive.
WORKER_WATCHDOG_USEC = 1_000_000
PING_GRACE = 3.0
# A worker that lived less than this died young: the next start waits longer.
YOUNG = 10.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 30.0
_TICK = 0.25


class Supervisor:
    """The master process (see the module docstring)."""

    def __init__(
        self,
        listener: Listener,
        config: Config,
        overrides: dict[str, Any],
        worker_args: list[str],
        reload_config: Callable[[], Config] | None = None,
    ) -> None:
        self._reload_config = reload_config
        self.settings_module = settings_module()
        self.listener = listener
        self.config = config
        self.overrides = {key: value for key, value in overrides.items() if value is not None}
        self.worker_args = worker_args
        self.notifier = Notifier()
        self.workers: dict[int, Worker] = {}  # pid -> worker, every one alive
        self.slots: dict[int, Worker] = {}  # slot -> the worker serving it
        self.backoff: dict[int, float] = {}
        self.restart_at: dict[int, float] = {}
        self.rotation: list[int] = []
        self.rotation_started = 0.0
        self.unready_since: dict[int, float] = {}
        self.draining = False
        self.drain_deadline = 0.0
        self.announced = False
        self.clean = True
        self.responsive = True
        self._next_status = 0.0
        self.restarts = 0
        self.reloads = 0
        self._reported: dict[str, Any] | None = None
        self._report_due = 0.0
        runtime = (os.environ.get("RUNTIME_DIRECTORY") or "").split(":")[0] or None
        self.shared_dir = tempfile.mkdtemp(prefix=f"socketsvc-{os.getpid()}-", dir=runtime)
        self.inbox = Inbox(os.path.join(self.shared_dir, "notify"))

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        """Start the workers and supervise them until they all stopped; return the exit status."""
        selector = selectors.DefaultSelector()
        signals = SignalWatch(
            (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD), self._on_signal
        )
        selector.register(signals, selectors.EVENT_READ, signals.deliver)
        selector.register(self.inbox, selectors.EVENT_READ, self._on_message)
        log.info(
            "master_started",
            pid=os.getpid(),
            processes=self.config.PROCESSES,
            socket=self.listener.describe(self.config.SOCKET),
            max_requests=self.config.MAX_REQUESTS or None,
            max_worker_memory_mb=self.config.MAX_WORKER_MEMORY_MB or None,
        )
        try:
            for slot in range(self.config.PROCESSES):
                self._start(slot)
            while self.workers or not self.draining:
                timeout = _TICK
                if self.draining:
                    timeout = min(timeout, max(0.0, self.drain_deadline - time.monotonic()))
                for key, _ in selector.select(timeout):
                    key.data()
                self._reap()
                self._tick(time.monotonic())
                self.report()
        finally:
            signals.close()
            selector.close()
            for worker in list(self.workers.values()):
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                worker.process.wait()
            self.inbox.close()
            shutil.rmtree(self.shared_dir, ignore_errors=True)
        log.info("master_stopped", clean=self.clean)
        return 0 if self.clean else 1

    def _start(self, slot: int, replaces: Worker | None = None, reason: str = "start") -> Worker:
        info = WorkerInfo(
            slot=slot,
            fd=self.listener.fileno(),
            master_pid=os.getpid(),
            shared_dir=self.shared_dir,
            overrides=self.overrides,
        )
        env = worker_environment(info, self.inbox.path, WORKER_WATCHDOG_USEC, self.settings_module)
        process = start_process(info, env, self.worker_args)
        now = time.monotonic()
        worker = Worker(slot, process, now, last_ping=now, replaces=replaces)
        self.workers[process.pid] = worker
        if replaces is None:
            self.slots[slot] = worker
        else:
            replaces.successor = worker
            events.process_recycled(reason)
        log.info("worker_process_started", slot=slot, worker_pid=process.pid, reason=reason)
        return worker

    # -- what workers say ------------------------------------------------------------

    def _on_message(self) -> None:
        for pid, fields in self.inbox.receive():
            worker = self.workers.get(pid)
            if worker is not None:
                self._heard(worker, fields)

    def _heard(self, worker: Worker, fields: list[str]) -> None:
        values = dict(item.partition("=")[::2] for item in fields if "=" in item)
        # Only a ping proves progress: a worker whose threads are all stuck still
        # sends STATUS= lines (its loop turns), but no WATCHDOG=1.
        if values.get("WATCHDOG") == "1" or values.get("READY") == "1":
            worker.last_ping = time.monotonic()
        if values.get("READY") == "1" and not worker.ready:
            worker.ready = True
            log.info("worker_process_ready", slot=worker.slot, worker_pid=worker.pid)
            if not worker.retiring:  # given up on already: it drains, it replaces nobody
                self._promote(worker)
        if DB_DOWN in values:
            worker.databases_down = tuple(filter(None, values[DB_DOWN].split(",")))
        if values.get(WAKE) == "1":
            self._wake_others(worker)
        reason = values.get("SOCKETSVC_RECYCLE")
        if reason:
            self._recycle(worker, reason)

    def _wake_others(self, sender: Worker) -> None:
        """A worker had a task ready and no idle task worker: wake its ready siblings."""
        for worker in self.workers.values():
            if worker is not sender and worker.ready and not worker.retiring:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(WAKE_SIGNAL)

    def _recycle(self, worker: Worker, reason: str) -> None:
        """A worker asks to be replaced: start its successor (once; only a serving worker)."""
        serving = worker.ready and self.slots.get(worker.slot) is worker
        if not serving or worker.retiring or self.draining or worker.successor is not None:
            return
        if reason == "max_memory" and time.monotonic() - worker.started < YOUNG:
            log.warning(
                "worker_recycle_refused",
                slot=worker.slot,
                worker_pid=worker.pid,
                reason=reason,
                hint="a fresh worker is already past MAX_WORKER_MEMORY_MB; raise it",
            )
            return
        self._start(worker.slot, replaces=worker, reason=reason)

    def _promote(self, worker: Worker) -> None:
        """A worker became ready: if it replaces one, that one now drains."""
        old = worker.replaces
        if old is not None:
            worker.replaces = None
            self.slots[worker.slot] = worker
            if old.pid in self.workers:
                self._retire(old)
        self._advance_rotation()

    def _advance_rotation(self) -> None:
        """Go on to the next slot once the current one has a ready worker started by the reload.

        A worker that took over the slot but was started before the reload (a
        recycle's successor) is replaced in turn: :meth:`_rotate_next` starts one.
        """
        if not self.rotation:
            return
        current = self.slots.get(self.rotation[0])
        if current is not None and current.ready and current.started >= self.rotation_started:
            self.rotation.pop(0)
        self._rotate_next()

    def _retire(self, worker: Worker) -> None:
        worker.retired_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)

    # -- signals ---------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # reaped after every turn
        if signum == signal.SIGHUP:
            self._reload()
        elif self.draining:
            log.warning("second_signal_stopping_now", signal=signal.Signals(signum).name)
            for worker in self.workers.values():
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        else:
            log.info("signal", signal=signal.Signals(signum).name)
            self._drain()

    def _drain(self) -> None:
        self.draining = True
        self.rotation.clear()
        self.drain_deadline = time.monotonic() + self.config.DRAIN_TIMEOUT + 5.0
        self.notifier.stopping(self._status_line())
        # A successor may bind the path, or inherit the activated socket.
        self.listener.close()
        log.info("draining", processes=len(self.workers))
        for worker in self.workers.values():
            self._retire(worker)

    def _reload(self) -> None:
        if self.draining:
            return
        self.notifier.reloading()
        reopen_log_files()
        if self.rotation:
            log.info("reload_already_in_progress", left=len(self.rotation))
            return
        if not self._reread():
            self.notifier.ready(self._status_line())  # the reload is over: nothing changed
            return
        log.info("reloading", processes=len(self.slots))
        self.rotation = sorted(self.slots)
        self.rotation_started = time.monotonic()
        self._rotate_next()

    def _reread(self) -> bool:
        """Take the master's part of fresh settings (the workers read their own).

        Return False if they are invalid: no worker is replaced then, since a new
        one would read the same settings and fail to start.
        """
        if self._reload_config is None:
            return True
        try:
            fresh = self._reload_config()
        except Exception as exc:
            log.error(
                "reload_failed",
                error=str(exc),
                hint="the settings are invalid; the previous settings and workers stay in force",
            )
            return False
        self.config, _, _ = reloaded(self.config, fresh)
        return True

    def _rotate_next(self) -> None:
        while self.rotation:
            slot = self.rotation[0]
            current = self.slots.get(slot)
            if current is None or current.pid not in self.workers:
                self.rotation.pop(0)  # being restarted anyway: it starts with new code
                continue
            if current.successor is None:
                self._start(slot, replaces=current, reason="reload")
            return
        self.reloads += 1
        log.info("reloaded", processes=len(self.slots))
        self.notifier.ready(self._status_line())

    # -- exits and time --------------------------------------------------------------

    def _reap(self) -> None:
        for pid, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is None:
                continue
            del self.workers[pid]
            self._exited(worker, code)

    def _exited(self, worker: Worker, code: int) -> None:
        events.process_exited(worker.pid)
        lived = time.monotonic() - worker.started
        expected = worker.retiring or self.draining
        fields = {
            "slot": worker.slot,
            "worker_pid": worker.pid,
            "how": exit_reason(code),
            "lived_s": round(lived, 3),
        }
        if expected:
            # One that never got as far as its signal handlers dies of the SIGTERM.
            stopped_early = code == -signal.SIGTERM and not worker.ready
            if code != 0 and not stopped_early:
                self.clean = False
            log.info("worker_process_stopped", **fields)
            return
        if worker.replaces is not None:
            # A successor that died before it was ready: the old one keeps serving
            # (and may ask to be recycled again).
            worker.replaces.successor = None
            log.error("worker_process_failed_to_start", **fields, replacing=worker.replaces.pid)
            if self.rotation:
                log.error("reload_failed", hint="the previous workers keep serving")
                self.rotation.clear()
                self.notifier.ready(self._status_line())
            return
        successor = worker.successor
        if successor is not None and successor.pid in self.workers:
            successor.replaces = None
            self.slots[worker.slot] = successor
            log.warning("worker_process_exited", **fields, replaced_by=successor.pid)
            self._advance_rotation()
            return
        delay = self.backoff.get(worker.slot, BACKOFF_FIRST)
        delay = BACKOFF_FIRST if lived >= YOUNG else min(delay * 2, BACKOFF_MAX)
        self.backoff[worker.slot] = delay
        self.restart_at[worker.slot] = time.monotonic() + delay
        self.restarts += 1
        events.process_restarted()
        if self.slots.get(worker.slot) is worker:
            del self.slots[worker.slot]
        log.error("worker_process_exited", **fields, restart_in=round(delay, 3))

    def _tick(self, now: float) -> None:
        if self.draining:
            if now >= self.drain_deadline and self.workers:
                log.error("drain_deadline_passed", processes=len(self.workers))
                self.clean = False
                for worker in self.workers.values():
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
                self.drain_deadline = now + 1.0
            return
        for worker in self.workers.values():
            late = worker.retiring and now - worker.retired_at > self.config.DRAIN_TIMEOUT + 5
            if late and not worker.killed:
                log.error("worker_process_drain_overdue", slot=worker.slot, worker_pid=worker.pid)
                worker.killed = True
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
        for slot, when in list(self.restart_at.items()):
            if now >= when:
                del self.restart_at[slot]
                self._start(slot, reason="restart")
        for worker in list(self.workers.values()):
            late = now - worker.started > self.config.WORKER_START_TIMEOUT
            if worker.replaces is not None and not worker.ready and late and not worker.retiring:
                self._give_up_on(worker)
        serving = [self.slots.get(slot) for slot in range(self.config.PROCESSES)]
        all_ready = all(worker is not None and worker.ready for worker in serving)
        if all_ready and not self.announced:
            self.announced = True
            log.info("ready", processes=len(serving))
            self.notifier.ready(self._status_line())
            self._next_status = now + 1.0
        elif self.announced and now >= self._next_status:
            self._next_status = now + 1.0
            self.notifier.status(self._status_line())
        silent = self._silent(now)
        if bool(silent) == self.responsive:
            self.responsive = not silent
            if silent:
                log.error(
                    "worker_process_unresponsive",
                    silent=silent,
                    hint="the watchdog is no longer fed",
                )
            else:
                log.warning("worker_processes_responsive_again")
        if self.responsive:
            self.notifier.ping_if_due(now)

    def _give_up_on(self, successor: Worker) -> None:
        """A successor not ready in time: the worker it was to replace serves on (and may be
        recycled or reloaded again); a reload waiting for it has failed."""
        old = successor.replaces
        log.error(
            "worker_process_not_ready",
            slot=successor.slot,
            worker_pid=successor.pid,
            waited_s=self.config.WORKER_START_TIMEOUT,
            replacing=None if old is None else old.pid,
        )
        if old is not None and old.successor is successor:
            old.successor = None
        successor.replaces = None
        # It may have accepted connections already: it drains them, then goes.
        self._retire(successor)
        if self.rotation:
            log.error("reload_failed", hint="the previous workers keep serving")
            self.rotation.clear()
            self.notifier.ready(self._status_line())

    def _silent(self, now: float) -> list[str]:
        """Return what stops the watchdog: workers that did not ping lately (a starting one
        gets WORKER_START_TIMEOUT), and slots without a ready worker for longer than that."""
        start_timeout = self.config.WORKER_START_TIMEOUT
        silent = [
            f"pid {worker.pid}"
            for worker in self.workers.values()
            if not worker.retiring
            and now - worker.last_ping > (PING_GRACE if worker.ready else start_timeout)
        ]
        for slot in range(self.config.PROCESSES):
            worker = self.slots.get(slot)
            if worker is not None and worker.ready:
                self.unready_since.pop(slot, None)
            elif now - self.unready_since.setdefault(slot, now) > start_timeout:
                silent.append(f"slot {slot}")
        return silent

    def report(self) -> None:
        """Write the master's row for rpc.status (at once when it changed, else every second)."""
        slots = []
        for slot in range(self.config.PROCESSES):
            worker = self.slots.get(slot)
            if slot in self.restart_at or worker is None:
                slots.append({"slot": slot, "pid": None, "state": "restarting"})
                continue
            state = "serving" if worker.ready else "starting"
            row: dict[str, Any] = {"slot": slot, "pid": worker.pid, "state": state}
            if worker.successor is not None:
                row["successor_pid"] = worker.successor.pid
            slots.append(row)
        state = "draining" if self.draining else "reloading" if self.rotation else "serving"
        report = {
            "pid": os.getpid(),
            "state": state,
            "processes": self.config.PROCESSES,
            "slots": slots,
            "restarts": self.restarts,
            "reloads": self.reloads,
        }
        now = time.monotonic()
        if report != self._reported or now >= self._report_due:
            self._reported, self._report_due = report, now + 1.0
            write_report(Path(self.shared_dir) / MASTER_REPORT, {**report, "rss_kib": rss_kib()})

    def _status_line(self) -> str:
        ready = sum(1 for worker in self.slots.values() if worker.ready)
        state = "Draining" if self.draining else "Serving"
        if self.rotation:
            state = "Reloading"
        line = f"{state}: {ready}/{self.config.PROCESSES} worker processes ready"
        down = sorted(
            {alias for worker in self.workers.values() for alias in worker.databases_down}
        )
        if down:
            line += f"; database {', '.join(down)} unavailable"
        return line
