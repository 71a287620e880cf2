"""Builds broken on purpose, to see the campaign's checker catch them (``--break NAME``).

The daemons read ``CAMPAIGN_BREAK`` through the test settings and patch themselves at
start; the product's code is never changed. Each break undoes one guarantee:

* ``lease``: the leases without their guards (as before they had them): a process frozen
  past its lease is not killed by the kernel, claims whether or not its lease is safely
  held, a claim ignores that its daemon was declared lost, and a renewal revives a daemon
  marked stopped, so a resumed daemon runs on as if nothing had happened;
* ``cancel``: a cancel only flags a task, so one cancelled before it started still runs;
* ``doubt``: a claim whose commit is in doubt is never put back, so the task it took stays
  RUNNING under a daemon that does not run it;
* ``unique``: an enqueue stores no unique key, so a second task with the key is made (and
  run) while one runs;
* ``limits``: a claim admits every task, whatever its lock key, concurrency or rate;
* ``time_limit``: no time limit is enforced, neither inside the task nor by the kernel;
* ``fanin``: a workflow's step starts as soon as any one step it follows succeeded (its
  counter not counted down), as a fan-in that polls one member would.
"""

from __future__ import annotations

import os
from typing import Any

BREAKS = ("lease", "cancel", "doubt", "unique", "limits", "time_limit", "fanin")


def apply() -> None:
    """Patch this process as ``CAMPAIGN_BREAK`` says (nothing if it is unset)."""
    name = os.environ.get("CAMPAIGN_BREAK", "")
    if not name:
        return
    if name not in BREAKS:
        raise ValueError(f"CAMPAIGN_BREAK={name!r}: one of {', '.join(BREAKS)}")
    if name == "lease":
        from socketsvc.models import DaemonRecord
        from socketsvc.tasks import statements, store
        from socketsvc.tasks.daemon import lease

        lease.KillSwitch.arm = lambda self, seconds: None  # type: ignore[method-assign]
        lease.Lease.may_claim = lambda self: True  # type: ignore[method-assign]

        def renew(worker_id: str, seconds: float, using: str) -> bool:
            DaemonRecord.objects.using(using).filter(id=worker_id).update(stopped_at=None)
            return original_renew(worker_id, seconds, using)

        original_renew = store.renew
        store.renew = renew
        statements.share_registration = lambda using, worker_id: True
        statements.take_if_registered = _take_unfenced(statements)
    elif name == "unique":
        from socketsvc.tasks import backend, store

        def insert_plainly(self: Any, task: Any, record: Any) -> None:
            record.unique_key = None
            store.insert(record, self.database)

        backend.SocketServiceBackend._insert_unique = insert_plainly  # type: ignore[method-assign]
    elif name == "limits":
        from socketsvc.tasks.daemon import limiting

        limiting._held_until = lambda *args, **kwargs: None
    elif name == "time_limit":
        from socketsvc.tasks.daemon import deadlines, runner

        deadlines.Deadlines._check = lambda self, running, now: 5.0  # type: ignore[method-assign]
        runner.KERNEL_KILL_AFTER = 10**6
    elif name == "fanin":
        from socketsvc.models import TaskRecord
        from socketsvc.tasks.workflows import fanin

        original = fanin.succeeded

        def succeeded(record: Any, using: str) -> list[str]:
            following = list((record.flow or {}).get("next") or ())
            TaskRecord.objects.using(using).filter(id__in=following, pending__gt=1).update(
                pending=1
            )
            return original(record, using)

        fanin.succeeded = succeeded
    elif name == "doubt":
        from socketsvc.tasks import store

        store.release_doubtful_claim = lambda worker_id, claimed_at, using: None
    else:
        from django.utils import timezone

        from socketsvc.models import TaskRecord
        from socketsvc.tasks import store

        def request_cancel(record_id: str, reason: dict[str, str], using: str) -> Any:
            TaskRecord.objects.using(using).filter(id=record_id).update(
                cancel_requested_at=timezone.now()
            )
            return TaskRecord.objects.using(using).get(id=record_id)

        store.request_cancel = request_cancel


def _take_unfenced(statements: Any) -> Any:
    def take(using: str, record_id: str, worker_id: str) -> bool:
        return bool(
            statements.update_row(
                using,
                {"status": "RUNNING", "claimed_by": worker_id},
                {"id": record_id, "status": "READY"},
            )
        )

    return take
