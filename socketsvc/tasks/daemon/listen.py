"""Wake-ups the database carries: a task committed on any host reaches every idle daemon.

An enqueue wakes the daemon its process talks to (its socket), which passes
the wake to its sibling processes when every task worker of its own is busy
(:meth:`socketsvc.tasks.daemon.runner.TaskRunner.wake`). A daemon on another host,
or a web host with no daemon at all, is reached only through the database,
by one watcher per daemon (the process itself, or under ``--processes`` the
worker process of the first slot, which passes what it hears to its siblings
the same way):

* PostgreSQL: a trigger (migration 0003) NOTIFYs ``socketsvc_task_ready``,
  with the queue as payload, when a row becomes READY (an enqueue, a retry, a
  lost run requeued), on commit. The watcher LISTENs on a connection of its
  own, idle in the server until a notification comes.
* MySQL and MariaDB have no NOTIFY: while a task worker may be idle, the
  watcher looks for a due READY task of its queues every ``TASK_WAKE_POLL``
  seconds (one lookup in the ``status, available_at`` index, on a connection
  of its own). A process alone does not look while every worker of its own is
  busy; the first slot's looks for its siblings whatever its own workers do.
* SQLite is one host's: the socket and the master carry every wake.

A lost notification, or a look that found nothing yet, costs at most the
runner's safety sweep: the row is the truth, the wake a hint.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from django.db import connections

from socketsvc.conf import Config
from socketsvc.models import TaskRecord, TaskStatus

log = structlog.get_logger(__name__)

CHANNEL = "socketsvc_task_ready"
_LISTEN_TICK = 1.0
_RETRY_FIRST, _RETRY_MAX = 0.5, 10.0


class Wakeable(Protocol):
    """The runner, as the watcher sees it."""

    @property
    def idle_workers(self) -> int: ...

    def wake(self, queue: str | None = None, forward: bool = True) -> None: ...


class DatabaseWakes:
    """Hear (or look for) tasks committed elsewhere; wake the runner (its own thread)."""

    def __init__(
        self,
        runner: Wakeable,
        database: str,
        backends: tuple[str, ...],
        queues: frozenset[str] | None,
        config: Config,
    ) -> None:
        self.runner = runner
        self.database = database
        self.backends = backends
        self.queues = queues
        self.config = config
        self.vendor = connections[database].vendor
        # Under a master: whether this process watches for its siblings too (else not at all).
        self.siblings: bool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._raw: Any = None
        # The server's id of the watcher's session (for rpc.status, and to tell it apart).
        self.session: int | None = None
        self.mode = self._mode()

    def watch_for_siblings(self, watcher: bool) -> None:
        """Under a master (before :meth:`start`): watch for the daemon's every process, or,
        when another process does, not at all."""
        self.siblings = watcher
        if not watcher:
            self.mode = "none"

    def _wake(self, queue: str | None) -> None:
        """What the database said may be ready: wake a worker here, or a sibling's."""
        self.runner.wake(queue, forward=bool(self.siblings))

    def _mode(self) -> str:
        if self.vendor == "postgresql":
            return "listen"
        if self.vendor == "mysql" and self.config.TASK_WAKE_POLL > 0:
            return "poll"
        return "none"

    def start(self) -> None:
        """Start listening (or looking), unless this database needs neither."""
        if self.mode == "none":
            return
        target = self._listen if self.mode == "listen" else self._poll
        self._thread = threading.Thread(target=target, name="socketsvc-tasks-wakes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and close the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def status(self) -> dict[str, Any]:
        """Return the watcher's part of ``rpc.status``."""
        if self.siblings is False:
            return {"mode": "by the first slot's process"}
        described: dict[str, Any] = {"mode": self.mode}
        if self.mode == "poll":
            described["every_s"] = self.config.TASK_WAKE_POLL
        if self.mode != "none":
            described["session"] = self.session
        return described

    # -- PostgreSQL ------------------------------------------------------------------

    def _listen(self) -> None:
        first = True
        delay = _RETRY_FIRST
        while not self._stop.is_set():
            try:
                self._raw = self._connect_raw()
                self._raw.execute(f"LISTEN {CHANNEL}")
                self.session = _backend_pid(self._raw)
                if not first:
                    self._wake(None)  # what was missed meanwhile
                first, delay = False, _RETRY_FIRST
                while not self._stop.is_set():
                    for queue in _notifications(self._raw, _LISTEN_TICK):
                        self._wake(queue)
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("task_wake_listener_failed", error=str(exc), retry_in=delay)
                self._stop.wait(delay)
                delay = min(delay * 2, _RETRY_MAX)
            finally:
                self._close_raw()

    def _connect_raw(self) -> Any:
        """Open a driver connection of the watcher's own, in autocommit (never from a pool)."""
        wrapper: Any = connections.create_connection(self.database)
        raw = wrapper.Database.connect(**wrapper.get_connection_params())
        raw.autocommit = True
        return raw

    def _close_raw(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.close()
            except Exception as exc:
                log.debug("task_wake_connection_close_failed", error=str(exc))

    # -- MySQL / MariaDB -------------------------------------------------------------

    def _poll(self) -> None:
        every = self.config.TASK_WAKE_POLL
        delay = _RETRY_FIRST
        wrapper: Any = connections.create_connection(self.database)
        sql = self._due_sql(wrapper)
        filters = self._filters()
        cursor: Any = None
        try:
            while not self._stop.wait(every):
                if not self.siblings and not self.runner.idle_workers:
                    continue
                try:
                    if cursor is None:
                        # The driver's own cursor: this runs 40 times a second, idle.
                        wrapper.ensure_connection()
                        cursor = wrapper.connection.cursor()
                        self.session = int(wrapper.connection.thread_id())
                    now = datetime.now(UTC).replace(tzinfo=None)  # MySQL holds UTC, naive
                    cursor.execute(sql, (TaskStatus.READY.value, now, *filters))
                    found = cursor.fetchone() is not None
                except Exception as exc:
                    log.warning("task_wake_poll_failed", error=str(exc), retry_in=delay)
                    cursor = None
                    _close_quietly(wrapper.close)
                    self._stop.wait(delay)
                    delay = min(delay * 2, _RETRY_MAX)
                    continue
                delay = _RETRY_FIRST
                if found:
                    self._wake(None)
        finally:
            _close_quietly(wrapper.close)

    def _filters(self) -> list[str]:
        return [*self.backends, *sorted(self.queues or ())]

    def _due_sql(self, wrapper: Any) -> str:
        quote = wrapper.ops.quote_name
        backends = ", ".join(["%s"] * len(self.backends))
        sql = (
            f"SELECT 1 FROM {quote(TaskRecord._meta.db_table)} "  # noqa: S608
            f"WHERE {quote('status')} = %s AND {quote('available_at')} <= %s "
            f"AND {quote('backend_name')} IN ({backends})"
        )
        if self.queues is not None:
            sql += f" AND {quote('queue_name')} IN ({', '.join(['%s'] * len(self.queues))})"
        return sql + " LIMIT 1"


def _notifications(raw: Any, timeout: float) -> list[str]:
    """Wait up to *timeout* for NOTIFYs on *raw*; return their payloads (psycopg 3 or 2)."""
    notifies = raw.notifies
    if callable(notifies):  # psycopg 3
        return [notify.payload for notify in notifies(timeout=timeout, stop_after=1)]
    readable, _, _ = select.select([raw], [], [], timeout)  # psycopg2
    if not readable:
        return []
    raw.poll()
    payloads = [notify.payload for notify in notifies]
    notifies.clear()
    return payloads


def _backend_pid(raw: Any) -> int | None:
    """Return the PostgreSQL backend's pid of a psycopg 3 or psycopg2 connection."""
    info = getattr(raw, "info", None)
    if info is not None and hasattr(info, "backend_pid"):
        return int(info.backend_pid)
    get_pid = getattr(raw, "get_backend_pid", None)
    return int(get_pid()) if callable(get_pid) else None


def _close_quietly(close: Callable[[], None]) -> None:
    try:
        close()
    except Exception as exc:
        log.debug("task_wake_connection_close_failed", error=str(exc))
