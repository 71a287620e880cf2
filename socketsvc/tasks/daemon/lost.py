"""Daemons that are gone, and the tasks they left RUNNING.

A daemon is gone when it recorded its stop, when its heartbeat is older than
``TASK_LEASE``, or, for a daemon on this very host (same host name, boot and
pid namespace, so its pid means something here), when its process no longer
exists: after a SIGKILL, the next daemon on the host knows at once, without
waiting for the lease. Their RUNNING tasks are run again if their retry
policy allows, else failed with :class:`~socketsvc.tasks.WorkerLost`.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from socketsvc.models import DaemonRecord
from socketsvc.procfs import pid_alive
from socketsvc.tasks import entries, store

_FORGET_STOPPED_AFTER = timedelta(days=1)


def _identity() -> tuple[str, str]:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot_id = handle.read().strip()
    except OSError:
        boot_id = ""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return boot_id, namespace


def this_daemon() -> DaemonRecord:
    """Return the (unsaved) row that describes this process."""
    boot_id, namespace = _identity()
    host = socket.gethostname()
    return DaemonRecord(
        id=f"{host[:40]}-{os.getpid()}-{store.new_id()[:8]}",
        hostname=host,
        pid=os.getpid(),
        boot_id=boot_id,
        pid_namespace=namespace,
    )


def _local(worker: DaemonRecord, me: DaemonRecord) -> bool:
    """Return True if *worker*'s pid can be checked from here."""
    same = (worker.hostname, worker.boot_id, worker.pid_namespace)
    return bool(worker.boot_id) and same == (me.hostname, me.boot_id, me.pid_namespace)


def recover_lost(me: DaemonRecord, database: str) -> tuple[int, int, str]:
    """Requeue or fail the tasks gone daemons left RUNNING; return (requeued, failed, names).

    A daemon is gone once it recorded its stop, its lease expired by the
    database's clock, or (on this host) its process no longer exists. It is
    marked stopped first, which a claim of its in flight waits for, so a run
    it claims after that is refused; then its runs are taken back.
    """
    gone = {worker.id: worker for worker in store.workers_gone(me.id, database)}
    for worker in store.workers_running(me.id, database):
        if _local(worker, me) and not pid_alive(worker.pid):
            gone[worker.id] = worker
    orphans = store.orphan_claims(database)
    if not gone and not orphans:
        return 0, 0, ""
    marked = store.mark_stopped(list(gone), database) if gone else set()
    names = ", ".join(str(gone[id]) for id in sorted(marked)) or "a daemon no longer recorded"
    reason = entries.error_entry(
        "socketsvc.tasks.WorkerLost",
        f"socketsvc.tasks.WorkerLost: the daemon running this task ({names}) stopped "
        "before it finished\n",
    )
    requeued, failed = store.lost({*marked, *orphans}, reason, database)
    store.forget_workers(_FORGET_STOPPED_AFTER, database)
    return requeued, failed, names
