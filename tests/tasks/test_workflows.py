"""Workflows (chain, group, chord) on real daemons, MariaDB and PostgreSQL.

``manage.py taskclient`` processes enqueue and read workflows as web processes
would; the steps (tests/testapp/flows.py) record when their own code ran, as
Marker rows, so orders and overlaps are judged from inside the runs.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any

import pytest

from tests.harness.waiting import poll

VENDORS = ("mariadb", "postgresql")
F = "tests.testapp.flows."


def _step(name: str, *args: Any, **options: Any) -> dict[str, Any]:
    return {"step": F + name, "args": list(args), **options}


def _finished(client, workflow_id: str, timeout: float = 120.0) -> dict[str, Any]:
    return poll(
        lambda: (w := client.ask("workflow_state", id=workflow_id))["status"] != "RUNNING" and w,
        timeout,
        interval=0.05,
        why=lambda: str(client.ask("workflow_state", id=workflow_id)),
    )


def _intervals(db, label: str) -> dict[str, tuple[float, float]]:
    """Each step's (start, end) under *label*, as its run recorded them."""
    rows = db.query(
        f"SELECT {db.quote('key')} FROM testapp_marker WHERE {db.quote('key')} LIKE %s",
        [f"flow|{label}|%"],
        db="socketsvc_test",
    )
    edges: dict[str, dict[str, float]] = defaultdict(dict)
    for (key,) in rows:
        _, _, name, edge, stamp = key.split("|")
        edges[name][edge] = float(stamp)
    return {name: (e.get("start", 0.0), e.get("end", 0.0)) for name, e in edges.items()}


def _rows(db, workflow_id: str) -> list[tuple[Any, ...]]:
    return db.query(
        "SELECT id, task_path, status, started_at, worker_ids, errors FROM socketsvc_task "
        "WHERE workflow_id = %s",
        [workflow_id],
        db="socketsvc_test",
    )


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_chain_of_3_passes_each_result_to_the_next(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """chain(add(1, 2), add(10), add(100)): each step receives the one before's result as
    its first argument and starts after it ended; the workflow returns the last one's."""
    url = clean_tasks.url()
    daemon = start_daemon(url, socket_path=str(short_tmp / "d.sock"), TASK_WORKERS=4)
    client = taskclient(url, daemon.socket)
    spec = {
        "chain": [
            _step("add", 1, 2),
            _step("add", 10),
            {"chain": [_step("then", "c3", "three"), _step("add", 100)]},
        ]
    }
    flow = client.ask("workflow", spec=spec)
    assert flow["status"] == "RUNNING"
    assert [s["status"] for s in flow["steps"]] == ["READY", "WAITING", "WAITING", "WAITING"]
    done = _finished(client, flow["id"])
    assert done["status"] == "SUCCESSFUL", done
    assert done["return_value"] == 113
    results = [client.result(s["id"]) for s in done["steps"]]
    assert [r["return_value"] for r in results] == [3, 13, 13, 113]
    assert [r["args"] for r in results] == [[1, 2], [3, 10], [13, "c3", "three"], [13, 100]]
    for earlier, later in itertools.pairwise(results):
        assert earlier["finished_at"] <= later["started_at"]


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_group_of_50_runs_in_parallel_on_2_daemons(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """50 steps of 0.3 s side by side on two daemons of 4 task threads each: both daemons
    ran some, at least 4 ran at once, and the result is the members' results in order."""
    url = clean_tasks.url()
    daemons = [
        start_daemon(url, socket_path=str(short_tmp / f"d{n}.sock"), TASK_WORKERS=4)
        for n in range(2)
    ]
    client = taskclient(url, daemons[0].socket)
    members = [_step("mark", "g50", f"m{n}", n, 0.3) for n in range(50)]
    flow = client.ask("workflow", spec={"group": members})
    done = _finished(client, flow["id"])
    assert done["status"] == "SUCCESSFUL", done
    assert done["return_value"] == list(range(50))
    intervals = sorted(_intervals(clean_tasks, "g50").values())
    assert len(intervals) == 50
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    assert most >= 4, f"at most {most} members ran at once"
    workers = {
        (json.loads(row[4]) if isinstance(row[4], str) else row[4])[-1]
        for row in _rows(clean_tasks, flow["id"])
    }
    assert len(workers) == 2, workers


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_chord_of_200_calls_its_callback_once_with_200_results_in_member_order(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """200 members finishing on two daemons with two worker processes each (many at the
    same moment): the callback ran exactly once (a second run would fail on its marker),
    after every member ended, with the 200 results in member order."""
    url = clean_tasks.url()
    daemons = [
        start_daemon(
            url, "--processes", "2", socket_path=str(short_tmp / f"d{n}.sock"), TASK_WORKERS=4
        )
        for n in range(2)
    ]
    client = taskclient(url, daemons[0].socket)
    members = [_step("mark", "c200", f"m{n}", n) for n in range(200)]
    spec = {"chord": [{"group": members}, _step("once", "c200")]}
    flow = client.ask("workflow", spec=spec)
    done = _finished(client, flow["id"], timeout=180)
    assert done["status"] == "SUCCESSFUL", done
    assert done["return_value"] == {"count": 200, "results": list(range(200))}
    callback = client.result(done["steps"][-1]["id"])
    assert callback["attempts"] == 1
    once = clean_tasks.query(
        f"SELECT COUNT(*) FROM testapp_marker WHERE {clean_tasks.quote('key')} = 'once|c200'",
        db="socketsvc_test",
    )
    assert once[0][0] == 1
    intervals = _intervals(clean_tasks, "c200")
    last_member_end = max(end for name, (_, end) in intervals.items() if name != "callback")
    assert intervals["callback"][0] >= last_member_end


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_failing_member_fails_the_workflow_cancels_what_follows_and_runs_on_error_once(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """chord(group(ok, fail, ok), callback) then a last step, with on_error: the workflow
    is FAILED naming the failed step, the callback and the last step never started (FAILED,
    Cancelled, saying why), on_error ran once with what failed."""
    url = clean_tasks.url()
    daemon = start_daemon(url, socket_path=str(short_tmp / "d.sock"), TASK_WORKERS=4)
    client = taskclient(url, daemon.socket)
    spec = {
        "chain": [
            {
                "chord": [
                    {
                        "group": [
                            _step("mark", "f", "a"),
                            _step("fail", "f", "b"),
                            _step("mark", "f", "c"),
                        ]
                    },
                    _step("once", "f"),
                ]
            },
            _step("then", "f", "last"),
        ]
    }
    flow = client.ask("workflow", spec=spec, on_error=_step("on_error", "f"))
    done = _finished(client, flow["id"])
    assert done["status"] == "FAILED", done
    steps = done["steps"]
    failed = steps[1]
    assert done["reason"]["step"] == failed["id"]
    assert done["reason"]["error"] == "builtins.RuntimeError"
    for waiting in (steps[3], steps[4]):
        result = client.result(waiting["id"])
        assert result["status"] == "FAILED"
        assert result["started_at"] is None and result["attempts"] == 0
        assert result["errors"][-1]["exception_class_path"] == "socketsvc.tasks.Cancelled"
        assert "its workflow failed" in result["errors"][-1]["traceback"]
    handler = client.finished(steps[-1]["id"])
    assert steps[-1]["on_error"]
    assert handler["status"] == "SUCCESSFUL", handler
    assert handler["return_value"] == {
        "workflow": flow["id"],
        "step": failed["id"],
        "task": F + "fail",
        "error": "builtins.RuntimeError",
    }
    assert handler["attempts"] == 1
    names = set(_intervals(clean_tasks, "f"))
    assert "callback" not in names and "last" not in names


@pytest.mark.parametrize("how", ["api", "admin"])
@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_cancelling_mid_workflow_stops_the_running_step_and_nothing_later_ever_starts(
    clean_tasks, start_daemon, taskclient, short_tmp, how
):
    """chain(slow, a, group(b, c), d): cancelled while the slow step runs (by
    cancel_workflow(), or by the admin page's button), the slow step stops (Cancelled), no
    later step ever starts, and the workflow is CANCELLED."""
    url = clean_tasks.url()
    daemon = start_daemon(url, socket_path=str(short_tmp / "d.sock"), TASK_WORKERS=4)
    client = taskclient(url, daemon.socket)
    spec = {
        "chain": [
            _step("mark", "x", "slow", None, 30),
            _step("then", "x", "a"),
            {"group": [_step("then", "x", "b"), _step("then", "x", "c")]},
            _step("then", "x", "d"),
        ]
    }
    flow = client.ask("workflow", spec=spec, on_error=_step("on_error", "x"))
    first = flow["steps"][0]["id"]
    client.status_becomes(first, "RUNNING")
    poll(lambda: client.ask("progress", id=first) is not None, 30, interval=0.05)
    if how == "admin":
        assert client.ask("admin_cancel_workflow", id=flow["id"]) == 302
        cancelled = client.ask("workflow_state", id=flow["id"])
    else:
        cancelled = client.ask("cancel_workflow", id=flow["id"])
    assert cancelled["status"] == "CANCELLED"
    slow = client.finished(first)
    assert slow["status"] == "FAILED"
    assert slow["errors"][-1]["exception_class_path"] == "socketsvc.tasks.Cancelled"
    for later in cancelled["steps"][1:]:
        result = client.result(later["id"])
        assert result["status"] == "FAILED", result
        assert result["started_at"] is None and result["attempts"] == 0
    assert set(_intervals(clean_tasks, "x")) == {"slow"}
    assert client.ask("workflow_state", id=flow["id"])["status"] == "CANCELLED"


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_workflow_enqueued_in_a_rolled_back_transaction_leaves_nothing(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """Every row of a workflow is written in the caller's transaction: rolled back, none is
    there (and nothing runs); committed, all are."""
    url = clean_tasks.url()
    daemon = start_daemon(url, socket_path=str(short_tmp / "d.sock"), TASK_WORKERS=2)
    client = taskclient(url, daemon.socket)
    spec = {"chord": [{"group": [_step("add", 1, 2), _step("add", 3, 4)]}, _step("once", "t")]}
    gone = client.ask("workflow", spec=spec, atomic="rollback")
    count = "SELECT COUNT(*) FROM socketsvc_task"
    assert clean_tasks.query(count, db="socketsvc_test")[0][0] == 0
    assert (
        clean_tasks.query(
            "SELECT COUNT(*) FROM socketsvc_workflow WHERE id = %s",
            [gone["id"]],
            db="socketsvc_test",
        )[0][0]
        == 0
    )
    kept = client.ask("workflow", spec=spec, atomic="commit")
    done = _finished(client, kept["id"])
    assert done["return_value"] == {"count": 2, "results": [3, 7]}
