"""The request lifecycle for RQ workers running Django tasks (django-tasks-rq).

RQ's default worker forks a fresh process per job, so each job gets fresh
database connections; a non-forking worker (``rq.worker.SimpleWorker``, the
one to use where fork is costly or unsafe) keeps its connections from job to
job, and meets "MySQL server has gone away" after ``wait_timeout``. This job
class runs every job inside :func:`socketsvc.lifecycle.request_scope`, as the
daemon runs its own tasks::

    python manage.py rqworker default --worker-class rq.worker.SimpleWorker \\
        --job-class socketsvc.contrib.rq.Job
"""

from __future__ import annotations

from typing import Any

from django_tasks_rq import Job as TasksJob

from socketsvc.conf import get_config
from socketsvc.db.lifecycle import request_scope


class Job(TasksJob):
    """A django-tasks-rq job run inside socketsvc's request lifecycle."""

    def perform(self) -> Any:
        """Run the job with its connections checked before and cleaned up after."""
        with request_scope(get_config().DB_CHECK_AFTER_IDLE):
            return super().perform()
