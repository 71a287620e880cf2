"""Route each parsed message: built-ins answered now, refusals answered now, calls to workers.

The router runs on the event loop. For one message it returns the bytes to
send at once (if any) and the jobs for the worker pool. A batch's members are
collected by a :class:`~socketsvc.server.connection.BatchReply`, so the batch is
answered with one array once its last member is done. Every request gets a
``request_id``; a refused call is logged here, an executed one by its worker.
"""

from __future__ import annotations

import itertools
import time

import structlog

from socketsvc import protocol
from socketsvc.methods.dispatch import Dispatcher, Outcome, error_outcome, error_type
from socketsvc.methods.registry import Registry
from socketsvc.observe import events
from socketsvc.protocol import Request, RPCError
from socketsvc.server.connection import BatchReply, Connection
from socketsvc.server.counters import Counters
from socketsvc.server.requestlog import log_request
from socketsvc.server.threads import Job

log = structlog.get_logger(__name__)

SHUTTING_DOWN = RPCError(
    protocol.SHUTTING_DOWN,
    "Shutting down: the service stopped before running this request; retry",
)


class Router:
    """Turn messages into immediate replies and jobs."""

    def __init__(self, builtins: Registry, dispatcher: Dispatcher, counters: Counters) -> None:
        self.builtins = builtins
        self.dispatcher = dispatcher
        self.counters = counters
        self.refusing = False  # past the drain deadline: every call gets -32004
        self._request_ids = itertools.count(1)

    @staticmethod
    def needs_worker(message: protocol.Message) -> bool:
        """Return True if *message* holds a call that a worker must run."""
        if isinstance(message, Request):
            return not message.method.startswith(protocol.BUILTIN_PREFIX)
        if isinstance(message, protocol.Batch):
            return any(
                isinstance(item, Request) and not item.method.startswith(protocol.BUILTIN_PREFIX)
                for item in message.items
            )
        return False

    def route(self, conn: Connection, message: protocol.Message) -> tuple[bytes | None, list[Job]]:
        """Return (reply to send now or None, jobs for the workers) for one message."""
        conn.requests += 1
        if isinstance(message, Request):
            reply, job = self._start(conn, message, None)
            return reply, [job] if job is not None else []
        if isinstance(message, protocol.Batch):
            return self._batch(conn, message)
        self.counters.errors += 1
        log.warning(
            "bad_message", conn=conn.id, peer_pid=conn.peer.pid, error=message["error"]["message"]
        )
        return protocol.encode(message), []

    def _batch(self, conn: Connection, batch: protocol.Batch) -> tuple[bytes | None, list[Job]]:
        collector = BatchReply(len(batch.items))
        jobs: list[Job] = []
        whole: bytes | None = None
        for item in batch.items:
            if isinstance(item, Request):
                reply, job = self._start(conn, item, collector)
                if job is not None:
                    jobs.append(job)
                    continue
            else:
                self.counters.errors += 1
                reply = protocol.encode(item)
            whole = collector.add(reply or None)
        if whole is None:
            conn.batches += 1  # answered when its last job is done
            return None, jobs
        return whole or None, jobs

    def _start(
        self, conn: Connection, request: Request, batch: BatchReply | None
    ) -> tuple[bytes | None, Job | None]:
        """Answer *request* now (built-ins, refusals) or make its job; never raise."""
        if request.is_notification:
            self.counters.notifications += 1
        else:
            self.counters.requests += 1
        received = time.monotonic()
        request_id = next(self._request_ids)
        try:
            if self.refusing:
                raise SHUTTING_DOWN
            builtin = self.builtins.get(request.method)
            if builtin is None:
                call = self.dispatcher.resolve(request)
                return None, Job(request_id, conn, call, batch, received)
            bound = builtin.binder.bind(request.params)
            result = builtin.func(*bound.args, **bound.kwargs)
            events.call_answered(request.method, None, time.monotonic() - received)
            if request.is_notification:
                return b"", None
            return protocol.encode(protocol.result_response(request.id, result)), None
        except RPCError as exc:
            outcome = self.dispatcher.refusal(request, exc)
        except Exception as exc:
            log.exception("builtin_failed", method=request.method)
            outcome = error_outcome(
                request,
                protocol.INTERNAL_ERROR,
                "Internal error: see the service log",
                None,
                error_type(exc),
            )
        self.counters.errors += 1
        if request.method.startswith(protocol.BUILTIN_PREFIX):
            events.call_answered(request.method, outcome.error_code, time.monotonic() - received)
        else:
            log_request(request_id, conn.peer, conn.id, request.method, received, outcome)
        return outcome.reply or b"", None

    def refuse_waiting(self, job: Job) -> Outcome:
        """Return the -32004 outcome of a job that never started (drain deadline)."""
        return self.dispatcher.refusal(job.call.request, SHUTTING_DOWN)
