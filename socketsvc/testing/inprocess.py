"""In-process mode: the daemon's request path, run in the test's own thread.

Nothing is bypassed but the socket: a call is encoded as on the wire, parsed,
bound to the handler's signature (a wrong param is the same -32602), run
inside the request lifecycle, and its reply decoded by the client, so errors
come back as the same exceptions. Handlers run on the test's connection: they
see the test's data, and inside a ``TestCase`` their writes roll back with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from socketsvc import protocol
from socketsvc.client import calls
from socketsvc.conf import get_config
from socketsvc.methods.dispatch import Dispatcher
from socketsvc.methods.registry import autodiscover
from socketsvc.protocol import Request, RPCError
from socketsvc.tasks import wake


class _NoWake:
    """Tasks wait for :meth:`InProcess.run_tasks`; nothing is told over a socket."""

    def wake(self, queue: str | None = None) -> None:
        pass

    def cancel_hint(self, record_id: str) -> None:
        pass


class InProcess:
    """What :func:`in_process` gives: the served handlers and a way to run the queued tasks."""

    def __init__(self) -> None:
        config = get_config()
        self.config = config
        self.dispatcher = Dispatcher(autodiscover(), config.DB_CHECK_AFTER_IDLE)
        self.limits = protocol.Limits()
        self.calls = 0

    def exchange(self, data: bytes) -> bytes | None:
        """Answer one encoded request as the daemon would (None for a notification)."""
        self.calls += 1
        message = protocol.parse(data.rstrip(b"\n"), self.limits)
        if not isinstance(message, Request):
            return protocol.encode(message) if isinstance(message, dict) else None
        try:
            call = self.dispatcher.resolve(message)
        except RPCError as exc:
            return self.dispatcher.refusal(message, exc).reply
        return self.dispatcher.execute(call, self.calls).reply

    def run_tasks(self, queues: list[str] | None = None, limit: int = 1000) -> list[Any]:
        """Run the READY tasks that are due, in this thread, until none is left; return them.

        Each runs as the daemon runs it (claim, lifecycle, retries, result
        recorded); the returned values are Django ``TaskResult`` objects.
        """
        from socketsvc.tasks.daemon.inprocess import run_due_tasks

        return run_due_tasks(self.config, queues, limit)


@contextmanager
def in_process() -> Iterator[InProcess]:
    """Within the block, ``call()`` and ``notify()`` run the handlers in this thread."""
    service = InProcess()
    calls.serve_in_process(service.exchange)
    wake.serve_in_process(_NoWake())
    try:
        yield service
    finally:
        calls.serve_in_process(None)
        wake.serve_in_process(None)


class InProcessMixin:
    """For Django test cases: every test runs with :func:`in_process` (``self.socketsvc``)."""

    socketsvc: InProcess

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        context = in_process()
        self.socketsvc = context.__enter__()
        self.addCleanup(context.__exit__, None, None, None)  # type: ignore[attr-defined]
