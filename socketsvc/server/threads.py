"""The worker pool: threads that run calls inside the request lifecycle and hand the outcomes back.

Each worker takes a :class:`Job` off the queue, runs it through the
dispatcher with the request's log context bound (so a handler's own log lines
carry its ``request_id``), hands the outcome to the loop through the
:class:`~socketsvc.server.handback.Handback`, and only then writes the canonical log
line. Nothing a handler or the logger does can end a worker: the dispatcher
answers every exception, and the worker guards what is left. A worker that
ends anyway answers its job with ``-32603`` on the way out and is replaced.

An idle worker closes its connections as they pass ``CONN_MAX_AGE``; a worker
that exits closes all of them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from socketsvc.db import lifecycle
from socketsvc.methods.dispatch import Call, Dispatcher, Outcome, internal_error
from socketsvc.observe import events, tracing
from socketsvc.server.connection import BatchReply, Connection
from socketsvc.server.handback import Handback
from socketsvc.server.requestlog import log_request

log = structlog.get_logger(__name__)

_RETIRE = object()


@dataclass(slots=True)
class Job:
    """A call queued for a worker, and where its reply goes."""

    request_id: int
    conn: Connection
    call: Call
    batch: BatchReply | None
    received: float
    # The trace and span ids of the call's span, when traced (for its log line).
    trace_ids: tuple[str, str] | None = None


class ThreadPool:
    """A resizable set of threads fed by one queue (the loop bounds it by reading less)."""

    def __init__(
        self,
        size: int,
        dispatcher: Dispatcher,
        handback: Handback,
        on_done: Callable[[Job, Outcome, bool], None],
        log_params: bool = False,
    ) -> None:
        self.dispatcher = dispatcher
        self.log_params = log_params
        self._handback = handback
        self._on_done = on_done
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._target = size
        self._running = 0  # threads alive
        self._retiring = 0  # retire sentinels not yet taken
        self._busy = 0
        self._taken = 0  # jobs ever started, for the stall check
        self._serial = 0
        self._threads: list[threading.Thread] = []
        self._seen_taken = 0
        self._progress_at = 0.0

    # -- sizes, read by the loop and rpc.status --------------------------------

    @property
    def size(self) -> int:
        """Return how many workers the pool is meant to have."""
        return self._target

    @property
    def busy(self) -> int:
        """Return how many workers are running a call."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Return how many jobs wait for a worker."""
        return max(0, self._jobs.qsize() - self._retiring)

    # -- the loop's side -------------------------------------------------------

    def start(self) -> None:
        """Start the threads."""
        self.resize(self._target)

    def resize(self, size: int) -> None:
        """Grow or shrink to *size* threads; a retiring thread finishes the jobs before its turn."""
        self._target = size
        with self._lock:
            effective = self._running - self._retiring
            for _ in range(effective - size):
                self._retiring += 1
                self._jobs.put(_RETIRE)
            missing = size - effective
            self._running += max(0, missing)
        for _ in range(missing):
            self._serial += 1
            thread = threading.Thread(
                target=self._work, name=f"socketsvc-worker-{self._serial}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._threads = [
            thread for thread in self._threads if thread.is_alive() or not thread.ident
        ]

    def submit(self, job: Job) -> None:
        """Queue *job*."""
        self._jobs.put(job)

    def take_waiting(self) -> list[Job]:
        """Remove and return every job no worker has started (retire sentinels stay)."""
        jobs: list[Job] = []
        sentinels = 0
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is _RETIRE:
                sentinels += 1
            else:
                jobs.append(item)
        for _ in range(sentinels):
            self._jobs.put(_RETIRE)
        return jobs

    def making_progress(self, now: float, stall_after: float) -> bool:
        """Return False once jobs have waited *stall_after* seconds with no worker taking one."""
        taken = self._taken
        if taken != self._seen_taken or self.waiting == 0:
            self._seen_taken, self._progress_at = taken, now
            return True
        return now - self._progress_at < stall_after

    def stop(self, timeout: float) -> bool:
        """Ask every thread to exit once idle; return True if all did within *timeout*."""
        self.resize(0)
        for thread in self._threads:
            thread.join(timeout)
            timeout = 0.0 if thread.is_alive() else timeout
        return not any(thread.is_alive() for thread in self._threads)

    def _worker_lost(self, name: str) -> None:
        log.error("worker_thread_died", worker=name, hint="replaced; see the error above")
        self.resize(self._target)

    # -- the workers' side -----------------------------------------------------

    def _work(self) -> None:
        job: Job | None = None
        retired = False
        try:
            while True:
                job = None
                item = self._next_item()
                if item is _RETIRE:
                    retired = True
                    return
                job = item
                outcome = self._run(job)
                # A reply for a connection with nothing queued goes out from here, at
                # once; the loop, told next, does the bookkeeping (and sends the rest).
                reply = outcome.reply
                sent = False
                if reply and job.batch is None:
                    sent = job.conn.transport.send_now(reply)
                self._handback.put(self._on_done, job, outcome, sent)
                done, job = job, None
                self._log(done, outcome)
        finally:
            with self._lock:
                self._running -= 1
                if retired:
                    self._retiring -= 1
            if not retired:
                if job is not None:
                    self._handback.put(
                        self._on_done, job, internal_error(job.call.request, job.request_id), False
                    )
                self._handback.put(self._worker_lost, threading.current_thread().name)
            try:
                lifecycle.close_thread_connections()
            except Exception:
                log.exception("worker_cleanup_failed")

    def _next_item(self) -> Any:
        while True:
            try:
                expiry = lifecycle.close_expired_connections()
            except Exception:
                log.exception("close_expired_connections_failed")
                expiry = None
            try:
                return self._jobs.get(timeout=expiry)
            except queue.Empty:
                continue

    def _run(self, job: Job) -> Outcome:
        peer = job.conn.peer
        with self._lock:
            self._busy += 1
            self._taken += 1
        try:
            with (
                bound_contextvars(
                    request_id=job.request_id,
                    method=job.call.method.name,
                    peer_pid=peer.pid,
                    peer_uid=peer.uid,
                ),
                tracing.call_span(
                    job.call.method.name, job.request_id, job.call.request.trace
                ) as span,
            ):
                if span is not None:
                    job.trace_ids = tracing.current_ids()
                events.call_running(1)
                try:
                    outcome = self.dispatcher.execute(job.call, job.request_id)
                finally:
                    events.call_running(-1)
                tracing.call_ended(span, outcome.error_code, outcome.error_type)
                return outcome
        except Exception:
            log.exception("worker_failed_around_call", request_id=job.request_id)
            return internal_error(job.call.request, job.request_id)
        finally:
            with self._lock:
                self._busy -= 1

    def _log(self, job: Job, outcome: Outcome) -> None:
        params = job.call.request.params if self.log_params else None
        log_request(
            job.request_id,
            job.conn.peer,
            job.conn.id,
            job.call.method.name,
            job.received,
            outcome,
            params,
            job.trace_ids,
        )
