"""What the daemon says about itself: readiness, ``STATUS=``, the watchdog and ``rpc.status``.

The watchdog is fed only while the daemon can make progress. The event loop
feeding it proves the loop turns; the worker pool must prove it too: when
calls have waited ``STALL_TIMEOUT`` seconds and no worker has taken one (every
worker stuck in a handler), the pool is wedged, the watchdog stops, and
systemd restarts the service. It resumes if a worker frees up first.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import django
import structlog

from socketsvc.conf import Config
from socketsvc.db import outages
from socketsvc.db.stats import stats
from socketsvc.methods.builtins import Tasks
from socketsvc.methods.dispatch import Dispatcher
from socketsvc.observe import events
from socketsvc.procfs import rss_kib
from socketsvc.server.connections import Clients
from socketsvc.server.counters import Counters
from socketsvc.server.threads import ThreadPool
from socketsvc.systemd import Notifier

log = structlog.get_logger(__name__)


class Observed(Protocol):
    """What health reads of the loop it watches."""

    config: Config
    pool: ThreadPool
    clients: Clients
    counters: Counters
    dispatcher: Dispatcher
    tasks: Tasks | None

    @property
    def serving(self) -> bool: ...

    @property
    def state_name(self) -> str: ...


class Role(Protocol):
    """This process's part in a daemon of several worker processes (``process.worker``'s
    ``WorkerRole``): it reports its figures, reads its siblings', takes reloaded settings."""

    @property
    def slot(self) -> int: ...

    def tick(
        self, state: tuple[bool, str], build_row: Callable[[], dict[str, Any]], now: float
    ) -> None: ...

    def whole(self, own: dict[str, Any]) -> dict[str, Any]: ...

    def apply(self, config: Config) -> None: ...


class Health:
    """Readiness and liveness of one loop, told to systemd and to ``rpc.status``."""

    def __init__(self, notifier: Notifier | None = None, role: Role | None = None) -> None:
        self.notifier = notifier or Notifier()
        self.role = role
        self.started = time.monotonic()
        self.ready = False
        # Serving, its databases not (yet) reachable: READY=1 all the same.
        self.serving_anyway = False
        self.progressing = True
        self.reloads = 0
        self._announced = False
        self._next_status = 0.0

    def mark_ready(self) -> None:
        """Record that the service can do its work (loop thread: put it on the handback)."""
        self.ready = True

    def mark_serving(self) -> None:
        """Record that the service serves though a database is down (loop thread)."""
        self.serving_anyway = True

    def seconds_to_ping(self, now: float) -> float | None:
        """Return how long the loop may sleep before the next watchdog ping is due."""
        return self.notifier.seconds_to_ping(now)

    def tick(self, loop: Observed, now: float) -> None:
        """Feed the watchdog while the pool makes progress; send READY=1 and STATUS=."""
        progressing = loop.pool.making_progress(now, loop.config.STALL_TIMEOUT)
        if progressing != self.progressing:
            self.progressing = progressing
            if progressing:
                log.warning("workers_progressing_again")
            else:
                log.error(
                    "workers_stalled",
                    waiting=loop.pool.waiting,
                    busy=loop.pool.busy,
                    stall_timeout=loop.config.STALL_TIMEOUT,
                    hint="every worker is stuck in a handler; the watchdog is no longer fed",
                )
            self._next_status = now
        if progressing:
            self.notifier.ping_if_due(now)
        if self.role is not None:
            self.role.tick((self.ready, loop.state_name), lambda: self.row(loop), now)
        if not self._announced:
            if (self.ready or self.serving_anyway) and loop.serving:
                self._announced = True
                self._next_status = now + 1.0
                self.notifier.ready(self.status_line(loop))
                log.info("ready")
        elif self.notifier.enabled and now >= self._next_status:
            self._next_status = now + 1.0
            self.notifier.status(self.status_line(loop))

    def stopping(self, loop: Observed) -> None:
        """Tell systemd the service is shutting down."""
        self.notifier.stopping(self.status_line(loop))

    def reloading(self) -> None:
        """Tell systemd a reload began."""
        self.notifier.reloading()

    def reloaded(self, loop: Observed, applied: bool = True) -> None:
        """Tell systemd the reload ended (and count it if new settings were *applied*)."""
        self.reloads += applied
        self.notifier.ready(self.status_line(loop))

    def status_line(self, loop: Observed) -> str:
        """Return the one-line ``STATUS=`` text."""
        pool = loop.pool
        state = "Stalled" if not self.progressing else loop.state_name.capitalize()
        line = (
            f"{state}: {len(loop.clients)} connections, {pool.busy}/{pool.size} workers busy, "
            f"{loop.counters.requests} requests, {loop.counters.errors} errors"
        )
        down = outages.unavailable()
        if down:
            line += f"; database {', '.join(down)} unavailable"
        return line

    def row(self, loop: Observed) -> dict[str, Any]:
        """Return this process's line of the daemon's figures."""
        counters = loop.counters
        return {
            "pid": os.getpid(),
            "slot": None if self.role is None else self.role.slot,
            "state": loop.state_name,
            "ready": self.ready,
            "uptime": round(time.monotonic() - self.started, 3),
            "connections": len(loop.clients),
            "requests": counters.requests,
            "notifications": counters.notifications,
            "errors": counters.errors,
            "workers": loop.pool.size,
            "busy_workers": loop.pool.busy,
            "queued": loop.pool.waiting,
            "rss_kib": rss_kib(),
        }

    def status(self, loop: Observed) -> dict[str, Any]:
        """Return what ``rpc.status`` reports (with worker processes: the whole daemon's too)."""
        counters = loop.counters
        own = self.row(loop)
        whole = {} if self.role is None else self.role.whole(dict(own))
        return {
            **own,
            "workers_progressing": self.progressing,
            "connections_accepted": loop.clients.accepted,
            "connections_evicted": loop.clients.evicted,
            "dropped_replies": counters.dropped_replies,
            "reloads": self.reloads,
            "handlers": len(loop.dispatcher.registry),
            "access": loop.clients.policy.description,
            "observing": events.snapshot(),
            "python": sys.version.split()[0],
            "django": django.get_version(),
            "databases": outages.status(),
            "tasks": None if loop.tasks is None else loop.tasks.status(),
            "config": dataclasses.asdict(loop.config),
            **stats.snapshot(),
            **whole,
        }
