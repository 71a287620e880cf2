"""Run due tasks in the calling thread, as the daemon's runner would (for tests).

The same claim, the same :class:`~socketsvc.tasks.daemon.execute.Executor` (request
lifecycle, retries, the result recorded, the signals sent), only without the
runner's threads: :meth:`socketsvc.testing.InProcess.run_tasks` calls this.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from socketsvc.conf import Config
from socketsvc.db.lifecycle import request_scope
from socketsvc.tasks import store
from socketsvc.tasks.backend import to_result
from socketsvc.tasks.daemon.execute import Executor
from socketsvc.tasks.daemon.lost import this_daemon
from socketsvc.tasks.daemon.serving import served
from socketsvc.tasks.runtime import Running

# Claims in a row that took nothing but saw more due tasks before it gives up.
_PASSES = 8


def run_due_tasks(config: Config, queues: list[str] | None, limit: int) -> list[Any]:
    """Claim and run due READY tasks one by one until none is left (at most *limit*)."""
    what = served(config)
    if what is None:
        raise ImproperlyConfigured("no TASKS alias uses socketsvc.tasks.SocketServiceBackend")
    wanted = what.queues if queues is None else frozenset(queues)
    worker = this_daemon()
    worker.started_at = worker.heartbeat_at = timezone.now()
    with request_scope(config.DB_CHECK_AFTER_IDLE):
        store.register_worker(worker, config.TASK_LEASE, what.database)

    def flush(running: Running) -> None:
        pending = running.take()
        if pending is not None:
            with request_scope(config.DB_CHECK_AFTER_IDLE):
                if not store.write_progress(
                    running.record_id, running.fence, *pending, what.database
                ):
                    running.cancelled.set()

    executor = Executor(
        what.database,
        what.backend_class,
        lambda: config.DB_CHECK_AFTER_IDLE,
        lambda: True,
        flush,
    )
    ran: list[Any] = []
    passed = 0
    try:
        while len(ran) < limit:
            with request_scope(config.DB_CHECK_AFTER_IDLE):
                record, more = store.claim(worker.id, what.aliases, wanted, what.database)
            if record is None:
                # A claim that passed over a step of an ended workflow (it failed it) has more
                # to look at; one held back by limits may have too, a few times at most.
                passed += 1
                if more and passed <= _PASSES:
                    continue
                break
            passed = 0
            executor.run(record, Running(record.id, (worker.id, record.claims)))
            record.refresh_from_db(using=what.database)
            ran.append(to_result(record, None))
    finally:
        with request_scope(config.DB_CHECK_AFTER_IDLE):
            store.stop_worker(worker.id, what.database)
    return ran
