"""Background tasks the Django way: socketsvc as a backend of Django's Tasks framework.

::

    TASKS = {"default": {"BACKEND": "socketsvc.tasks.SocketServiceBackend"}}

    from django.tasks import task          # on Django 5.2: from django_tasks import task
    from socketsvc.tasks import limits, progress, retry

    @task
    @retry(attempts=3, backoff=5.0)
    @limits(concurrency=2, timeout=600)
    def stock_report(warehouse: str) -> dict:
        for n, product in enumerate(products, 1):
            ...
            progress(n, total, note=product.sku)
        return {"summary": ...}

    result = stock_report.enqueue("north")   # a row, committed with the caller's transaction
    stock_report.get_result(result.id)       # from any process

``manage.py runsocketservice`` runs them on worker threads of its own
(``TASK_WORKERS``), woken over its socket the moment a task commits.
"""

from socketsvc.tasks.backend import SocketServiceBackend, enqueue_many
from socketsvc.tasks.limits import limits
from socketsvc.tasks.periodic import periodic
from socketsvc.tasks.policy import (
    Cancelled,
    DuplicateTask,
    ResultNotStored,
    RetryPolicy,
    TaskExpired,
    TimeLimitExceeded,
    WorkerLost,
    retry,
)
from socketsvc.tasks.runtime import cancel, get_progress, progress
from socketsvc.tasks.workflows.canvas import Step, chain, chord, group, step
from socketsvc.tasks.workflows.state import (
    WorkflowDoesNotExist,
    WorkflowResult,
    WorkflowStep,
    cancel_workflow,
    get_workflow,
)

__all__ = [
    "Cancelled",
    "DuplicateTask",
    "ResultNotStored",
    "RetryPolicy",
    "SocketServiceBackend",
    "Step",
    "TaskExpired",
    "TimeLimitExceeded",
    "WorkerLost",
    "WorkflowDoesNotExist",
    "WorkflowResult",
    "WorkflowStep",
    "cancel",
    "cancel_workflow",
    "chain",
    "chord",
    "enqueue_many",
    "get_progress",
    "get_workflow",
    "group",
    "limits",
    "periodic",
    "progress",
    "retry",
    "step",
]
