"""Task controls (``@limits``, ``QUEUE_LIMITS``, ``enqueue_many``) held across daemons.

Real daemons (several, some with worker processes) on a real MariaDB or PostgreSQL;
``manage.py taskclient`` processes enqueue as web processes would. The tasks
(tests/testapp/controlled.py) record when their own code ran, as Marker rows, so
overlaps and orders are judged from inside the runs, not from the bookkeeping.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest

from tests.harness.taskclient import TaskClientError
from tests.harness.waiting import poll

VENDORS = ("mariadb", "postgresql")
T = "tests.testapp.controlled."


def _daemons(start_daemon, url: str, short_tmp, count: int, *args: str, **settings: Any):
    return [
        start_daemon(url, *args, socket_path=str(short_tmp / f"d{n}.sock"), **settings)
        for n in range(count)
    ]


def _wait_all_finished(db, timeout: float = 120.0) -> None:
    def left() -> bool:
        rows = db.query(
            "SELECT COUNT(*) FROM socketsvc_task WHERE status IN ('READY', 'RUNNING')",
            db="socketsvc_test",
        )
        return rows[0][0] == 0

    def state() -> str:
        rows = db.query(
            "SELECT id, status, waiting, available_at, lock_key, claimed_by, enqueued_at "
            "FROM socketsvc_task WHERE status IN ('READY', 'RUNNING') ORDER BY enqueued_at",
            db="socketsvc_test",
        )
        return "tasks still READY or RUNNING:\n" + "\n".join(map(str, rows[:20]))

    poll(left, timeout, interval=0.1, why=state)


def _statuses(db) -> dict[str, int]:
    rows = db.query(
        "SELECT status, COUNT(*) FROM socketsvc_task GROUP BY status", db="socketsvc_test"
    )
    return dict(rows)


def _intervals(db, label: str) -> dict[int, tuple[float, float]]:
    """Return each run's (start, end) of *label*, by its seq, as the runs recorded them."""
    keys = [
        key
        for (key,) in db.query(
            f"SELECT {db.quote('key')} FROM testapp_marker WHERE {db.quote('key')} LIKE %s",
            [f"{label}|%"],
            db="socketsvc_test",
        )
    ]
    edges: dict[int, dict[str, float]] = defaultdict(dict)
    for key in keys:
        _, seq, edge, stamp = key.split("|")
        edges[int(seq)][edge] = float(stamp)
    return {seq: (e["start"], e["end"]) for seq, e in edges.items()}


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in events:  # an end sorts before a start at the same moment
        now += step
        most = max(most, now)
    return most


def _started_at(db, task: str) -> list[float]:
    rows = db.query(
        "SELECT started_at FROM socketsvc_task WHERE task_path = %s",
        [T + task],
        db="socketsvc_test",
    )
    return sorted(row[0].timestamp() for row in rows)


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_unique_task_enqueued_500_times_by_8_producers_runs_one_at_a_time(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """Two daemons with two worker processes each; eight producers enqueue the same key 504
    times while it runs. Never two rows READY or RUNNING with the key (sampled throughout),
    never two runs inside at once, and every enqueue got the id of a task that exists."""
    url = clean_tasks.url()
    daemons = _daemons(start_daemon, url, short_tmp, 2, "--processes", "2", TASK_WORKERS=2)
    clients = [taskclient(url, daemons[n % 2].socket) for n in range(8)]
    answers: list[dict[str, Any]] = []
    most_active = [0]
    done = threading.Event()

    def produce(client) -> None:
        answers.append(
            client.ask(
                "enqueue_times", task=T + "unique_run", args=["k", 0, 0.4], times=63, pause=0.01
            )
        )

    def sample() -> None:
        while not done.is_set():
            rows = clean_tasks.query(
                "SELECT COUNT(*) FROM socketsvc_task WHERE unique_key = 'k' "
                "AND status IN ('READY', 'RUNNING')",
                db="socketsvc_test",
            )
            most_active[0] = max(most_active[0], rows[0][0])

    sampler = threading.Thread(target=sample)
    sampler.start()
    producers = [threading.Thread(target=produce, args=(client,)) for client in clients]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(120)
    _wait_all_finished(clean_tasks)
    done.set()
    sampler.join(10)
    ids = {task_id for answer in answers for task_id in answer["ids"]}
    assert sum(len(answer["ids"]) for answer in answers) == 8 * 63
    rows = clean_tasks.query(
        "SELECT id, status FROM socketsvc_task WHERE unique_key = 'k'", db="socketsvc_test"
    )
    assert ids == {row[0] for row in rows}  # each enqueue got an existing task's id
    assert {row[1] for row in rows} == {"SUCCESSFUL"}  # a second run inside would have failed
    assert 1 <= len(rows) < 8 * 63
    assert most_active[0] == 1
    assert _most_at_once(list(_intervals(clean_tasks, "k").values())) == 1


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_unique_task_declared_to_raise_refuses_a_duplicate(clean_tasks, taskclient, short_tmp):
    """on_duplicate="raise": the second enqueue raises DuplicateTask naming the queued one."""
    client = taskclient(clean_tasks.url(), str(short_tmp / "none.sock"))
    first = client.enqueue(T + "unique_strict", "x")
    with pytest.raises(TaskClientError) as raised:
        client.enqueue(T + "unique_strict", "x")
    assert raised.value.kind == "socketsvc.tasks.policy.DuplicateTask"
    assert first["id"] in str(raised.value)
    other = client.enqueue(T + "unique_strict", "y")  # another key is another task
    assert other["id"] != first["id"]


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_tasks_with_one_lock_key_run_one_at_a_time_in_enqueue_order(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """200 tasks over 10 lock keys on two daemons of four task threads: per key no two runs
    overlap and they start in the order enqueued; runs of different keys overlap."""
    url = clean_tasks.url()
    daemons = _daemons(start_daemon, url, short_tmp, 2, TASK_WORKERS=4)
    client = taskclient(url, daemons[0].socket)
    for seq in range(20):
        for key in range(10):
            client.enqueue(T + "serial_run", f"key{key}", seq, 0.03)
    _wait_all_finished(clean_tasks)
    assert _statuses(clean_tasks) == {"SUCCESSFUL": 200}
    everything = []
    for key in range(10):
        runs = _intervals(clean_tasks, f"key{key}")
        assert sorted(runs) == list(range(20))
        by_start = sorted(runs, key=lambda seq: runs[seq][0])
        assert by_start == list(range(20)), f"key{key} started out of order: {by_start}"
        assert _most_at_once(list(runs.values())) == 1
        everything += runs.values()
    assert _most_at_once(everything) >= 2  # different keys ran side by side


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_concurrency_limit_holds_across_daemons_and_processes(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """concurrency=3 with two daemons of two worker processes of four task threads (16 slots):
    at most three runs inside at once, and three were reached."""
    url = clean_tasks.url()
    daemons = _daemons(start_daemon, url, short_tmp, 2, "--processes", "2", TASK_WORKERS=4)
    client = taskclient(url, daemons[0].socket)
    client.ask(
        "enqueue_many", task=T + "limited_run", calls=[[[seq, 0.15], {}] for seq in range(40)]
    )
    _wait_all_finished(clean_tasks)
    assert _statuses(clean_tasks) == {"SUCCESSFUL": 40}
    runs = _intervals(clean_tasks, "limited")
    assert len(runs) == 40
    assert _most_at_once(list(runs.values())) == 3


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_queue_limit_holds_for_every_task_of_the_queue(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """The queue "limited" has concurrency 2 in QUEUE_LIMITS: tasks with no limits of their own
    run at most two at once in it."""
    url = clean_tasks.url()
    daemons = _daemons(start_daemon, url, short_tmp, 2, TASK_WORKERS=4)
    client = taskclient(url, daemons[0].socket)
    for seq in range(16):
        client.enqueue(T + "queue_limited", seq, 0.1, queue_name="limited")
    _wait_all_finished(clean_tasks)
    assert _statuses(clean_tasks) == {"SUCCESSFUL": 16}
    assert _most_at_once(list(_intervals(clean_tasks, "queued").values())) == 2


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_rate_limit_holds_across_daemons_without_failing_anything(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """rate="10/s" on two daemons, 200 tasks at once: no window of one second holds more than
    ten starts, none failed, none used a retry, and all ran (so it took about 20 s)."""
    url = clean_tasks.url()
    daemons = _daemons(start_daemon, url, short_tmp, 2, TASK_WORKERS=4)
    client = taskclient(url, daemons[0].socket)
    client.ask("enqueue_many", task=T + "rated", calls=[[[seq], {}] for seq in range(200)])
    _wait_all_finished(clean_tasks, timeout=90)
    assert _statuses(clean_tasks) == {"SUCCESSFUL": 200}
    attempts = clean_tasks.query("SELECT DISTINCT claims FROM socketsvc_task", db="socketsvc_test")
    assert attempts == [(1,)] or list(attempts) == [(1,)]
    starts = _started_at(clean_tasks, "rated")
    for n, first in enumerate(starts):
        within = [s for s in starts[n:] if s < first + 1.0]
        assert len(within) <= 10, f"{len(within)} starts within 1 s of {first}"
    assert starts[-1] - starts[0] >= 19.0  # 200 starts at 10 a second cannot take less


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_the_soft_time_limit_stops_a_pure_python_loop(clean_tasks, start_daemon, taskclient):
    """A busy loop with a 1 s limit ends FAILED with TimeLimitExceeded; the daemon goes on."""
    daemon = start_daemon(clean_tasks.url(), TASK_WORKERS=1)
    client = taskclient(clean_tasks.url(), daemon.socket)
    busy = client.enqueue(T + "busy_loop")
    done = client.finished(busy["id"], timeout=30)
    assert done["status"] == "FAILED"
    error = done["errors"][-1]
    assert error["exception_class_path"] == "socketsvc.tasks.TimeLimitExceeded"
    assert "time limit of 1 s" in error["traceback"]
    after = client.enqueue("add", 2, 3)  # the same (only) worker thread takes the next task
    assert client.finished(after["id"])["return_value"] == 5


@pytest.mark.parametrize("task", ["sleep_forever", "stuck_in_c"])
@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_the_hard_limit_replaces_the_worker_process_of_a_stuck_task(
    clean_tasks, start_daemon, taskclient, task
):
    """A task in time.sleep(3600), or inside one long C call (which holds the interpreter, so
    no thread of its process can act), ignores the soft limit; at the hard limit its worker
    process is ended: FAILED with TimeLimitExceeded, and the slot runs the next task in a new
    process."""
    daemon = start_daemon(clean_tasks.url(), "--processes", "2", TASK_WORKERS=1)
    client = taskclient(clean_tasks.url(), daemon.socket)
    stuck = client.enqueue(T + task)
    done = client.finished(stuck["id"], timeout=60)
    assert done["status"] == "FAILED"
    error = done["errors"][-1]
    assert error["exception_class_path"] == "socketsvc.tasks.TimeLimitExceeded"
    assert "hard limit (3 s)" in error["traceback"]
    poll(lambda: any(e.get("event") == "worker_process_exited" for e in daemon.log_events()))
    if task == "sleep_forever":  # the process stopped the run itself, then ended
        assert any(e.get("event") == "task_stopped_hard" for e in daemon.log_events())
    after = [client.enqueue("add", n, n) for n in range(4)]
    for n, queued in enumerate(after):
        assert client.finished(queued["id"])["return_value"] == 2 * n
    assert daemon.process.poll() is None


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_without_worker_processes_a_stuck_task_is_recorded_failed_and_its_thread_replaced(
    clean_tasks, start_daemon, taskclient
):
    """Alone, the daemon cannot stop a thread: at the hard limit the run is recorded FAILED
    (not retried: it may still be running), the log says why, and a new thread serves."""
    daemon = start_daemon(clean_tasks.url(), TASK_WORKERS=1)
    client = taskclient(clean_tasks.url(), daemon.socket)
    stuck = client.enqueue(T + "sleep_forever")
    done = client.finished(stuck["id"], timeout=30)
    assert done["status"] == "FAILED"
    assert "could not be stopped" in done["errors"][-1]["traceback"]
    poll(lambda: any(e.get("event") == "task_not_stoppable" for e in daemon.log_events()))
    after = client.enqueue("add", 1, 1)
    assert client.finished(after["id"])["return_value"] == 2


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_cancel_stops_a_task_that_never_calls_progress(clean_tasks, start_daemon, taskclient):
    """A pure-Python loop that never calls progress() stops soon after cancel()."""
    daemon = start_daemon(clean_tasks.url(), TASK_WORKERS=1)
    client = taskclient(clean_tasks.url(), daemon.socket)
    spin = client.enqueue(T + "spin_without_progress")
    poll(lambda: client.result(spin["id"])["status"] == "RUNNING")
    poll(
        lambda: (
            clean_tasks.query(
                f"SELECT COUNT(*) FROM testapp_marker WHERE {clean_tasks.quote('key')} = 'spin|in'",
                db="socketsvc_test",
            )[0][0]
            == 1
        )
    )
    client.ask("cancel", id=spin["id"])
    done = client.finished(spin["id"], timeout=20)
    assert done["status"] == "FAILED"
    assert done["errors"][-1]["exception_class_path"] == "socketsvc.tasks.Cancelled"


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_task_not_started_before_it_expires_never_runs(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """Enqueued while no daemon runs, started 3 s later: it ends FAILED with TaskExpired and
    its code never ran; one enqueued after the daemon started runs."""
    url = clean_tasks.url()
    socket = str(short_tmp / "late.sock")
    client = taskclient(url, socket)
    late = client.enqueue(T + "expiring", "late")
    time.sleep(3.0)  # the expiry is what is tested: two seconds must pass
    start_daemon(url, socket_path=socket, TASK_WORKERS=1)
    done = client.finished(late["id"])
    assert done["status"] == "FAILED"
    assert done["errors"][-1]["exception_class_path"] == "socketsvc.tasks.TaskExpired"
    fresh = client.enqueue(T + "expiring", "fresh")
    assert client.finished(fresh["id"])["status"] == "SUCCESSFUL"
    markers = clean_tasks.query(
        f"SELECT {clean_tasks.quote('key')} FROM testapp_marker", db="socketsvc_test"
    )
    assert [row[0] for row in markers] == ["fresh"]


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_bulk_enqueue_stores_every_task_and_each_runs(clean_tasks, start_daemon, taskclient):
    """enqueue_many: 1,000 results in order, every task run once; arguments with quotes,
    backslashes, percent signs and non-ASCII text arrive as they were given."""
    daemon = start_daemon(clean_tasks.url(), TASK_WORKERS=4)
    client = taskclient(clean_tasks.url(), daemon.socket)
    ids = client.ask("enqueue_many", task="add", calls=[[[n, 1], {}] for n in range(1000)])
    assert len(set(ids)) == 1000
    keys = ["it's", 'say "hi"', "back\\slash", "100%s %d", "straße ✓", "(a), (b)"]
    client.ask("enqueue_many", task="mark", calls=[[[], {"key": key}] for key in keys])
    _wait_all_finished(clean_tasks)
    assert _statuses(clean_tasks) == {"SUCCESSFUL": 1000 + len(keys)}
    assert client.result(ids[7])["return_value"] == 8
    marked = clean_tasks.query(
        f"SELECT {clean_tasks.quote('key')} FROM testapp_marker", db="socketsvc_test"
    )
    assert sorted(row[0] for row in marked) == sorted(keys)


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_an_async_task_uses_the_async_orm_on_a_checked_connection(
    clean_tasks, start_daemon, taskclient
):
    """An async def task runs on an event loop in the worker; its async ORM calls use the
    worker thread's connection, which the lifecycle replaces after its session was killed."""
    daemon = start_daemon(clean_tasks.url(), TASK_WORKERS=1)
    client = taskclient(clean_tasks.url(), daemon.socket)
    counted = client.enqueue(T + "async_count", "a1")
    assert client.finished(counted["id"])["return_value"] == 1
    first = client.finished(client.enqueue(T + "async_connection_id")["id"])
    clean_tasks.kill_session(first["return_value"])
    second = client.finished(client.enqueue(T + "async_connection_id")["id"])
    assert second["status"] == "SUCCESSFUL", second["errors"]
    assert second["return_value"] != first["return_value"]


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_an_async_task_is_cancelled_at_its_time_limit(clean_tasks, start_daemon, taskclient):
    """An async task awaiting forever: its coroutine is cancelled at the soft limit and the run
    ends FAILED with TimeLimitExceeded (no process replaced)."""
    daemon = start_daemon(clean_tasks.url(), TASK_WORKERS=1)
    client = taskclient(clean_tasks.url(), daemon.socket)
    asleep = client.enqueue(T + "async_sleep_forever")
    done = client.finished(asleep["id"], timeout=30)
    assert done["status"] == "FAILED"
    assert done["errors"][-1]["exception_class_path"] == "socketsvc.tasks.TimeLimitExceeded"
    assert not any(e.get("event") == "task_not_stoppable" for e in daemon.log_events())
    assert daemon.process.poll() is None


def test_an_async_task_idle_past_wait_timeout_still_queries_and_gets_its_result_recorded(
    private_mariadb, start_daemon, taskclient
):
    """wait_timeout=2: an async task awaits 3.5 s, then queries through the async ORM; the
    session it had is gone, the lifecycle replaces it, and the result is recorded."""
    private_mariadb.set_wait_timeout(2)
    daemon = start_daemon(private_mariadb.url(), conn_max_age="none", TASK_WORKERS=1)
    client = taskclient(private_mariadb.url(), daemon.socket)
    warm = client.enqueue(T + "async_count", "warm")  # the worker's session, left idle
    assert client.finished(warm["id"])["status"] == "SUCCESSFUL"
    idle = client.enqueue(T + "async_pause_then_count", 3.5)
    done = client.finished(idle["id"])
    assert done["status"] == "SUCCESSFUL", done["errors"]
    assert done["return_value"] == 1


def test_limits_hold_on_sqlite_too(sqlite_url, start_daemon, taskclient):
    """The demo's database: a concurrency limit, a lock key and a rate on SQLite (no SKIP
    LOCKED: each claim runs alone) — every task runs, within its limits."""
    daemon = start_daemon(sqlite_url, TASK_WORKERS=4)
    client = taskclient(sqlite_url, daemon.socket)
    queued = [client.enqueue(T + "limited_run", seq, 0.1)["id"] for seq in range(8)]
    queued += [client.enqueue(T + "serial_run", "one", seq, 0.05)["id"] for seq in range(4)]
    queued += [client.enqueue(T + "rated", seq)["id"] for seq in range(12)]
    done = [client.finished(task_id, timeout=60) for task_id in queued]
    assert {result["status"] for result in done} == {"SUCCESSFUL"}
    rated = sorted(datetime.fromisoformat(result["started_at"]).timestamp() for result in done[12:])
    assert rated[-1] - rated[0] >= 1.0  # 12 starts at 10 a second cannot take less
