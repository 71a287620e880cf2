"""The worker pool: threads that run calls inside the request lifecycle and log each one.

Each worker takes a :class:`Job` off a bounded queue, runs it through the
dispatcher with the request's log context bound (so a handler's own log lines
carry its ``request_id``), writes the canonical log line, and hands the
outcome back to the event loop through a deque and a wake-up callback. An idle
worker closes its connections as they pass ``CONN_MAX_AGE``; a worker that
exits closes all of them.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from . import lifecycle
from .connection import BatchReply, Connection
from .dispatch import Call, Dispatcher, Outcome

log = structlog.get_logger("socketsvc.request")


@dataclass(slots=True)
class Job:
    """A call queued for a worker, and where its reply goes."""

    request_id: int
    conn: Connection
    call: Call
    batch: BatchReply | None
    received: float


def log_request(  # noqa: PLR0917
    request_id: int,
    conn: Connection,
    method: str,
    received: float,
    outcome: Outcome,
    params: Any = None,
) -> None:
    """Write the one canonical log line of a request."""
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": method,
        "peer_pid": conn.pid,
        "peer_uid": conn.uid,
        "conn": conn.id,
        "duration_ms": round((time.monotonic() - received) * 1000, 3),
        "outcome": "ok" if outcome.error_code is None else "error",
        "db_connects": outcome.db_connects,
        "db_reconnects": outcome.db_reconnects,
    }
    if outcome.error_code is not None:
        fields["error_code"] = outcome.error_code
        fields["error"] = outcome.error_message
        fields["error_type"] = outcome.error_type
    if params is not None:
        fields["params"] = params
    if outcome.exception is not None:
        log.error("request", exc_info=outcome.exception, **fields)
    elif outcome.error_code is not None:
        log.warning("request", **fields)
    else:
        log.info("request", **fields)


class WorkerPool:
    """A resizable set of threads fed by a bounded queue."""

    def __init__(
        self,
        size: int,
        max_queued: int,
        dispatcher: Dispatcher,
        wake: Callable[[], None],
        log_params: bool = False,
    ) -> None:
        self.size = 0
        self.dispatcher = dispatcher
        self.log_params = log_params
        self.max_queued = max_queued
        # Unbounded underneath: the loop applies the bound by not reading more
        # requests (see full), and sentinels that retire threads never block.
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.done: collections.deque[tuple[Job, Outcome]] = collections.deque()
        self.busy = 0
        self._busy_lock = threading.Lock()
        self._wake = wake
        self._threads: list[threading.Thread] = []
        self._target = size
        self._serial = 0

    def start(self) -> None:
        """Start the threads."""
        self.resize(self._target)

    def resize(self, size: int) -> None:
        """Grow or shrink to *size* threads; a shrinking thread finishes its job first."""
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        while self.size < size:
            self._serial += 1
            thread = threading.Thread(
                target=self._work, name=f"socketsvc-worker-{self._serial}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
            self.size += 1
        while self.size > size:
            # A sentinel at the front would jump the queue; at the back it
            # retires one thread after the jobs already waiting.
            self.jobs.put(None)
            self.size -= 1

    @property
    def full(self) -> bool:
        """Return True if ``max_queued`` jobs are waiting for a worker."""
        return self.jobs.qsize() >= self.max_queued

    def submit(self, job: Job) -> None:
        """Queue *job* (the loop stops reading new requests while the queue is full)."""
        self.jobs.put(job)

    def take_waiting(self) -> list[Job]:
        """Remove and return the jobs no worker has started."""
        waiting: list[Job] = []
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return waiting
            if job is None:
                self.jobs.put(None)  # a retiring thread's sentinel stays
                return waiting
            waiting.append(job)

    def _work(self) -> None:
        try:
            while True:
                next_expiry = lifecycle.close_expired_connections()
                try:
                    job = self.jobs.get(timeout=next_expiry)
                except queue.Empty:
                    continue
                if job is None:
                    return
                self.done.append((job, self._run(job)))
                self._wake()
        finally:
            lifecycle.close_thread_connections()

    def _run(self, job: Job) -> Outcome:
        conn, method = job.conn, job.call.method.name
        with self._busy_lock:
            self.busy += 1
        try:
            with bound_contextvars(
                request_id=job.request_id, method=method, peer_pid=conn.pid, peer_uid=conn.uid
            ):
                outcome = self.dispatcher.execute(job.call)
                params = job.call.request.params if self.log_params else None
                log_request(job.request_id, conn, method, job.received, outcome, params)
        finally:
            with self._busy_lock:
                self.busy -= 1
        return outcome

    def stop(self, timeout: float) -> bool:
        """Ask every thread to exit once idle; return True if all did within *timeout*."""
        for _ in self._threads:
            self.jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)
