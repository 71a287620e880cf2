"""Read the history back once the system has settled (on a side connection of the test's)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from tests.campaign.checker import Cut, History, Run, Task, Workflow
from tests.campaign.cluster import LEASE, SCHEDULE, Cluster
from tests.campaign.workload import Record


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # MySQL's DATETIME holds UTC for Django
    return moment.timestamp()


def _json(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)


def read_history(cluster: Cluster, record: Record, paused_at: float) -> History:
    """Return the rows the system ended with, the runs' own records, and the clients'."""
    tasks = {}
    slots: dict[float, list[str]] = defaultdict(list)
    as_text = cluster.server.as_text("return_value")  # the JSON's text, on either server
    as_reason, as_graph = cluster.server.as_text("reason"), cluster.server.as_text("graph")
    for row in cluster.query(
        f"SELECT id, status, max_attempts, {as_text}, cancel_requested_at, schedule, slot, "
        f"unique_key, lock_key, enqueued_at, {cluster.server.as_text('limits')}, "
        f"{cluster.server.as_text('args')}, {cluster.server.as_text('errors')}, workflow_id, "
        f"{cluster.server.as_text('flow')} FROM socketsvc_task"
    ):
        task = Task(
            id=row[0],
            status=row[1],
            max_attempts=int(row[2]),
            return_value=_json(row[3]),
            cancel_requested_at=_epoch(row[4]),
            schedule=row[5],
            slot=_epoch(row[6]),
            unique_key=row[7],
            lock_key=row[8],
            enqueued_at=_epoch(row[9]) or 0.0,
            limits=_json(row[10]) or {},
            args=_json(row[11]) or [],
            errors=[str(error.get("traceback", "")) for error in _json(row[12]) or []],
            workflow_id=row[13],
            flow=_json(row[14]) or {},
        )
        tasks[task.id] = task
        if task.schedule == SCHEDULE and task.slot is not None:
            slots[task.slot].append(task.id)
    workflows = {
        row[0]: Workflow(
            id=row[0],
            status=row[1],
            finished_at=_epoch(row[2]),
            reason=_json(row[3]) or {},
            on_error=(_json(row[4]) or {}).get("on_error"),
        )
        for row in cluster.query(
            f"SELECT id, status, finished_at, {as_reason}, {as_graph} FROM socketsvc_workflow"
        )
    }
    runs = [
        Run(
            task_id=row[0],
            attempt=int(row[1]),
            kind=row[2],
            pid=int(row[3]),
            claimed_at=float(row[4]),
            started=float(row[5]),
            ended=None if row[6] is None else float(row[6]),
            outcome=row[7],
            value=row[8],
        )
        for row in cluster.query(
            "SELECT task_id, attempt, kind, pid, claimed_at, started, ended, outcome, value "
            "FROM testapp_campaignrun"
        )
    ]
    effects = Counter(
        {
            str(token): int(count)
            for token, count in cluster.query(
                "SELECT token, COUNT(*) FROM testapp_campaigncall GROUP BY token"
            )
        }
    )
    cuts = [
        Cut(at=at, task_id=task_id, pid=_pid_of(claimant))
        for at, task_id, claimant in cluster.commits_cut()
    ]
    put_back = {
        (str(event.get("task_id")), int(event.get("pid", 0)))
        for event in cluster.logs()
        if event.get("event") == "task_claim_put_back"
    }
    return History(
        tasks=tasks,
        runs=runs,
        deaths={pid: list(deaths) for pid, deaths in cluster.deaths.died.items()},
        calls=list(record.calls),
        effects=effects,
        slots=dict(slots),
        paused_at=paused_at,
        cuts=cuts,
        put_back=put_back,
        doubt_within=LEASE,
        enqueue_returned=_first_returned(record),
        workflows=workflows,
    )


def _first_returned(record: Record) -> dict[str, float]:
    """Return when each task's first enqueue returned (a unique task may be returned again)."""
    returned: dict[str, float] = {}
    for enqueued in record.enqueued:
        returned.setdefault(enqueued.task_id, enqueued.at)
    return returned


def _pid_of(worker_id: str) -> int:
    """Return the pid in a worker id (``host-pid-suffix``; the host may hold dashes)."""
    try:
        return int(worker_id.rsplit("-", 2)[1])
    except (IndexError, ValueError):
        return 0
