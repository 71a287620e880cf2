"""Which tasks this daemon runs: the ``TASKS`` aliases whose backend is socketsvc's."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from socketsvc.conf import Config
from socketsvc.tasks.backend import SocketServiceBackend
from socketsvc.tasks.compat import task_backends
from socketsvc.tasks.daemon.runner import Served, TaskRunner
from socketsvc.tasks.limits import QueueLimits
from socketsvc.tasks.periodic import discover


def served(config: Config) -> Served | None:
    """Return what the runner serves, or None when no ``TASKS`` alias uses socketsvc."""
    ours = []
    for alias in getattr(settings, "TASKS", {}) or {}:
        backend = task_backends[alias]
        if isinstance(backend, SocketServiceBackend):
            ours.append(backend)
    if not ours:
        return None
    databases = {backend.database for backend in ours}
    if len(databases) > 1:
        raise ImproperlyConfigured(
            "the socketsvc TASKS backends name different DATABASE options "
            f"({', '.join(sorted(databases))}); one daemon serves one task table"
        )
    if config.TASK_QUEUES is not None:
        queues: frozenset[str] | None = frozenset(config.TASK_QUEUES)
    elif any(not backend.queues for backend in ours):
        queues = None  # a backend with QUEUES=[] takes any queue name
    else:
        queues = frozenset().union(*(backend.queues for backend in ours))
    limits: dict[str, QueueLimits] = {}
    for backend in ours:
        for queue, declared in backend.queue_limits.items():
            if limits.setdefault(queue, declared) != declared:
                raise ImproperlyConfigured(
                    f"the socketsvc TASKS backends declare different QUEUE_LIMITS for queue "
                    f"{queue!r}; they share one task table"
                )
    return Served(
        tuple(backend.alias for backend in ours),
        queues,
        databases.pop(),
        SocketServiceBackend,
        limits,
    )


def runner_for(config: Config) -> TaskRunner | None:
    """Return the task runner this daemon should start, or None (no tasks, or TASK_WORKERS=0).

    The ``tasks`` modules of the installed apps are imported first, so their
    periodic schedules are known (a bad one stops the daemon here, naming it).
    """
    if config.TASK_WORKERS == 0:
        return None
    what = served(config)
    if what is None:
        return None
    schedules = discover()
    if config.SCHEDULES is not None:
        unknown = set(config.SCHEDULES) - {schedule.name for schedule in schedules}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ImproperlyConfigured(
                f"SOCKETSVC['SCHEDULES'] names schedules no app declares: {names}"
            )
        schedules = [schedule for schedule in schedules if schedule.name in config.SCHEDULES]
    return TaskRunner(what, config, schedules)
