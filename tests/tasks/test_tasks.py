"""Tasks through Django's Tasks API: durable rows, run by a real daemon on a real MariaDB.

A ``manage.py taskclient`` process plays the web tier (it enqueues and reads
results); the daemon is a real ``runsocketservice``; the database is the
worker's throwaway MariaDB.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from tests.harness.daemon import manage
from tests.harness.taskclient import TaskClientError, seconds_between
from tests.harness.waiting import poll

pytestmark = pytest.mark.mariadb

# Tests marked with this also run on PostgreSQL: the claim (FOR UPDATE SKIP LOCKED),
# recovery of lost runs, cancellation and retries.
VENDORS = ("mariadb", "postgresql")

FRAMEWORK_DOES_NOT_EXIST = ("django.tasks.exceptions", "django_tasks.exceptions")


@pytest.fixture
def tasks_db(clean_tasks):
    return clean_tasks


@pytest.fixture
def start_tasks_daemon(start_daemon):
    """start_daemon with task workers (two unless TASK_WORKERS says otherwise)."""

    def start(url: str, *args: str, **options: Any):
        return start_daemon(url, *args, **{"TASK_WORKERS": 2, **options})

    return start


@pytest.fixture
def daemon(tasks_db, start_tasks_daemon):
    return start_tasks_daemon(tasks_db.url())


@pytest.fixture
def client(tasks_db, daemon, taskclient):
    return taskclient(tasks_db.url(), daemon.socket)


def signals_for(daemon, result_id: str) -> list[str]:
    return [
        event["signal"]
        for event in daemon.log_events()
        if event.get("event") == "task_signal" and event.get("result_id") == result_id
    ]


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_task_succeeds_and_another_process_reads_its_return_value(daemon, client):
    """enqueue -> SUCCESSFUL with the return value, read through get_result by another process."""
    queued = client.enqueue("add", 2, 40)
    assert queued["status"] == "READY"
    assert client.ask("enqueued_signals") == [queued["id"]]
    done = client.finished(queued["id"])
    assert done["status"] == "SUCCESSFUL"
    assert done["return_value"] == 42
    assert done["attempts"] == 1
    assert done["errors"] == []
    assert done["started_at"] >= done["enqueued_at"]
    assert done["finished_at"] >= done["started_at"]
    poll(lambda: signals_for(daemon, queued["id"]) == ["task_started", "task_finished"])


def test_a_failing_task_records_the_exception_path_and_traceback(daemon, client):
    """A task that raises ends FAILED; its error names the exception class and has the traceback."""
    queued = client.enqueue("fail", "no stock")
    done = client.finished(queued["id"])
    assert done["status"] == "FAILED"
    [error] = done["errors"]
    assert error["exception_class_path"] == "builtins.ValueError"
    assert "Traceback (most recent call last)" in error["traceback"]
    assert "ValueError: no stock" in error["traceback"]
    assert "return_value" not in done
    poll(lambda: signals_for(daemon, queued["id"]) == ["task_started", "task_finished"])


def test_a_task_enqueued_while_the_daemon_is_down_runs_when_it_starts(
    tasks_db, start_tasks_daemon, taskclient, short_tmp
):
    """The row waits for the daemon: it runs once the daemon starts, with no wake-up needed."""
    socket_path = str(short_tmp / "late.sock")
    client = taskclient(tasks_db.url(), socket_path)
    queued = client.enqueue("add", 1, 1)
    assert client.result(queued["id"])["status"] == "READY"
    start_tasks_daemon(tasks_db.url(), socket_path=socket_path)
    assert client.finished(queued["id"])["return_value"] == 2


def test_a_task_enqueued_in_a_rolled_back_transaction_never_exists(daemon, client):
    """enqueue inside atomic() that rolls back: no row, no run; get_result raises DoesNotExist."""
    queued = client.enqueue("mark", "rolled-back", atomic="rollback")
    with pytest.raises(TaskClientError) as missing:
        client.result(queued["id"])
    assert missing.value.kind.rsplit(".", 1)[0] in FRAMEWORK_DOES_NOT_EXIST
    assert missing.value.kind.endswith("TaskResultDoesNotExist")
    committed = client.enqueue("mark", "committed", atomic="commit")
    assert client.finished(committed["id"])["status"] == "SUCCESSFUL"


def test_a_task_enqueued_in_a_transaction_held_open_starts_only_after_the_commit(
    tasks_db, daemon, client, taskclient
):
    """enqueue() inside a transaction that stays open while the daemon is woken and busy with
    other work: the task is not started until the transaction commits, then it runs."""
    assert client.ask("begin") == "begun"
    held = client.enqueue("mark", "held-open")
    other = taskclient(tasks_db.url(), daemon.socket)
    daemon.call("rpc.tasks.wake")
    # A later task, committed at once, is claimed and run: the daemon looked meanwhile.
    other.finished(other.enqueue("add", 1, 1)["id"])
    assert tasks_db.query(
        "SELECT COUNT(*) FROM socketsvc_task WHERE id = %s", [held["id"]], db="socketsvc_test"
    ) == [(0,)]
    # Invisible to every other session until the commit: no claim could take it before.
    assert client.ask("commit") == "committed"
    done = client.finished(held["id"])
    assert (done["status"], done["attempts"]) == ("SUCCESSFUL", 1)
    assert tasks_db.query(
        f"SELECT COUNT(*) FROM testapp_marker WHERE {tasks_db.quote('key')} = %s",
        ["held-open"],
        db="socketsvc_test",
    ) == [(1,)]


def test_priority_queue_and_run_after_are_kept(daemon, client):
    """A task's queue, priority and run_after are stored and honoured."""
    report = client.enqueue("tests.testapp.urgent.urgent_report", "daily")
    assert (report["queue_name"], report["priority"]) == ("reports", 10)
    assert client.finished(report["id"])["return_value"]["report"] == "daily"
    later = client.enqueue("add", 3, 4, run_after=1.0)
    done = client.finished(later["id"])
    assert seconds_between(done["run_after"], done["started_at"]) >= 0.0
    assert seconds_between(done["enqueued_at"], done["run_after"]) > 0.9
    # The daemon woke for it: no polling interval (TASK_SWEEP_INTERVAL, 30 s) stands
    # between due and started; the margin is for a busy machine.
    assert seconds_between(done["enqueued_at"], done["started_at"]) < 5.0


def test_higher_priority_runs_first(tasks_db, start_tasks_daemon, taskclient, gate):
    """With the only task worker busy, the higher-priority task waiting runs before the lower."""
    daemon = start_tasks_daemon(tasks_db.url(), TASK_WORKERS=1)
    client = taskclient(tasks_db.url(), daemon.socket)
    blocker = client.enqueue("hold", gate.path)
    gate.wait_for(1)
    low = client.enqueue("add", 1, 0, priority=-5)
    high = client.enqueue("add", 2, 0, priority=50)
    gate.open()
    for queued in (blocker, low, high):
        client.finished(queued["id"])
    assert client.result(high["id"])["started_at"] < client.result(low["id"])["started_at"]


def test_a_task_idle_past_wait_timeout_still_gets_its_result_recorded(
    private_mariadb, start_tasks_daemon, taskclient
):
    """wait_timeout=2: a task sleeping 3.5 s without the DB, and one querying around the sleep,
    both end SUCCESSFUL (the bookkeeping connection is checked and replaced first)."""
    private_mariadb.set_wait_timeout(2)
    daemon = start_tasks_daemon(private_mariadb.url(), conn_max_age="none")
    client = taskclient(private_mariadb.url(), daemon.socket)
    idle = client.enqueue("sleep_then_return", 3.5)
    around = client.enqueue("query_sleep_query", 3.5)
    assert client.finished(idle["id"])["status"] == "SUCCESSFUL"
    assert client.finished(around["id"])["status"] == "SUCCESSFUL"
    assert daemon.call("rpc.status")["dead_connections_replaced"] >= 1


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_retries_back_off_and_every_attempt_is_visible(daemon, client):
    """flaky fails twice then succeeds: 3 attempts, 2 errors, waits of >= 0.3 s then >= 0.6 s."""
    queued = client.enqueue("flaky", 2)
    done = client.finished(queued["id"])
    assert done["status"] == "SUCCESSFUL"
    assert done["return_value"] == 3
    assert done["attempts"] == 3
    assert [e["exception_class_path"] for e in done["errors"]] == ["builtins.ConnectionError"] * 2
    assert seconds_between(done["enqueued_at"], done["started_at"]) >= 0.9
    tries = poll(
        lambda: (
            len(
                found := [
                    e
                    for e in daemon.log_events()
                    if e.get("event") == "task" and e.get("task_id") == done["id"]
                ]
            )
            == 3
            and found
        )
    )
    assert [t["outcome"] for t in tries] == ["retry", "retry", "ok"]
    assert tries[0]["retry_in"] == pytest.approx(0.3, abs=0.01)
    assert tries[1]["retry_in"] == pytest.approx(0.6, abs=0.01)


def test_a_failed_tasks_log_record_carries_its_exception(
    tasks_db, start_tasks_daemon, taskclient, short_tmp
):
    """The framework's task_finished receiver logs a failure with its exception (exc_info), as
    a project's logging handler (mail_admins, Sentry) needs it; a success without one."""
    captured = short_tmp / "records.jsonl"
    daemon = start_tasks_daemon(tasks_db.url(), env={"TEST_LOG_CAPTURE": str(captured)})
    client = taskclient(tasks_db.url(), daemon.socket)
    failed = client.finished(client.enqueue("fail", "no stock")["id"])
    ok = client.finished(client.enqueue("add", 1, 2)["id"])

    def finished_record(result_id: str) -> dict | None:
        if not captured.exists():
            return None
        for line in captured.read_text().splitlines():
            record = json.loads(line)
            message = record["message"]
            finished = "SUCCESSFUL" in message or "FAILED" in message
            if record["logger"] in ("django.tasks", "django_tasks") and (
                f"id={result_id}" in message and finished
            ):
                return record
        return None

    record = poll(lambda: finished_record(failed["id"]))
    assert record["level"] == "ERROR"
    assert record["exc_type"] == "ValueError"
    assert poll(lambda: finished_record(ok["id"]))["exc_type"] is None


@pytest.mark.parametrize("clean_tasks", ["postgresql"], indirect=True)
def test_a_result_the_database_refuses_ends_the_task_failed_saying_why(daemon, client):
    """PostgreSQL's jsonb refuses a NUL: the task ends FAILED with ResultNotStored and the
    reason, not RUNNING under a live daemon; the next task runs as usual."""
    done = client.finished(client.enqueue("return_nul")["id"])
    assert done["status"] == "FAILED"
    error = done["errors"][-1]
    assert error["exception_class_path"] == "socketsvc.tasks.ResultNotStored"
    assert "could not be stored" in error["traceback"]
    assert "SQLSTATE" in error["traceback"]
    assert client.finished(client.enqueue("add", 1, 1)["id"])["return_value"] == 2
    assert daemon.process.poll() is None


def test_a_result_over_max_allowed_packet_ends_the_task_failed_saying_why(
    private_mariadb, start_tasks_daemon, taskclient
):
    """MariaDB closes the connection on a statement over max_allowed_packet (it looks like an
    outage): the result is refused before it is sent, and the task ends FAILED saying so."""
    private_mariadb.query("SET GLOBAL max_allowed_packet = 1048576")
    daemon = start_tasks_daemon(private_mariadb.url())
    client = taskclient(private_mariadb.url(), daemon.socket)
    done = client.finished(client.enqueue("return_large", 2_000_000)["id"])
    assert done["status"] == "FAILED"
    error = done["errors"][-1]
    assert error["exception_class_path"] == "socketsvc.tasks.ResultNotStored"
    assert "max_allowed_packet" in error["traceback"]
    assert client.finished(client.enqueue("return_large", 1000)["id"])["status"] == "SUCCESSFUL"


def test_an_error_the_policy_does_not_retry_fails_at_once(daemon, client):
    """retry_on=(ConnectionError,) and a ValueError: one attempt, FAILED."""
    done = client.finished(client.enqueue("fails_once_with_value_error", "bad input")["id"])
    assert done["status"] == "FAILED"
    assert done["attempts"] == 1


def test_progress_is_readable_while_the_task_runs(daemon, client, gate):
    """get_progress() from another process shows done/total/note while the task runs."""
    queued = client.enqueue("count_slowly", 40, 0.05, kwargs={"gate": gate.path})
    gate.wait_for(1)
    assert client.ask("progress", id=queued["id"]) is None  # nothing reported yet
    gate.open()
    seen = poll(lambda: (p := client.ask("progress", id=queued["id"])) and p["done"] >= 5 and p)
    assert seen["total"] == 40
    assert seen["note"].startswith("step ")
    done = client.finished(queued["id"])
    assert done["return_value"] == 40
    assert client.ask("progress", id=queued["id"]) == {"done": 40, "total": 40, "note": "step 40"}


def test_a_cancelled_queued_task_never_runs(tasks_db, start_tasks_daemon, taskclient, gate):
    """cancel() on a READY task: FAILED with Cancelled at once, never started."""
    daemon = start_tasks_daemon(tasks_db.url(), TASK_WORKERS=1)
    client = taskclient(tasks_db.url(), daemon.socket)
    blocker = client.enqueue("hold", gate.path)
    gate.wait_for(1)
    queued = client.enqueue("mark", "never")
    cancelled = client.ask("cancel", id=queued["id"])
    assert cancelled["status"] == "FAILED"
    assert [e["exception_class_path"] for e in cancelled["errors"]] == ["socketsvc.tasks.Cancelled"]
    later = client.enqueue("add", 1, 1)
    gate.open()
    client.finished(blocker["id"])
    # One worker, in enqueue order: once the later task has run, the cancelled one would
    # have been claimed before it, had it been left READY.
    client.finished(later["id"])
    after = client.result(queued["id"])
    assert after["started_at"] is None
    assert after["attempts"] == 0
    assert tasks_db.query(
        f"SELECT COUNT(*) FROM testapp_marker WHERE {tasks_db.quote('key')}='never'",
        db="socketsvc_test",
    ) == [(0,)]


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_cancelled_running_task_stops_at_its_next_progress(daemon, client):
    """cancel() on a RUNNING task: it raises Cancelled at its next progress(), ends FAILED."""
    queued = client.enqueue("count_slowly", 1000, 0.01)
    poll(lambda: (p := client.ask("progress", id=queued["id"])) and p["done"] >= 3)
    client.ask("cancel", id=queued["id"])
    done = client.finished(queued["id"])
    assert done["status"] == "FAILED"
    assert done["errors"][-1]["exception_class_path"] == "socketsvc.tasks.Cancelled"
    assert client.ask("progress", id=queued["id"])["done"] < 1000


def test_a_task_cancelled_while_running_is_never_retried(
    tasks_db, start_tasks_daemon, taskclient, gate
):
    """Cancelled while blocked in a system call, then raising an error its @retry would retry:
    the cancel is raised in it as soon as it is back in Python, before its own error; FAILED
    after one attempt with the cancel as its error, and never started again."""
    daemon = start_tasks_daemon(tasks_db.url(), TASK_WORKERS=1)
    client = taskclient(tasks_db.url(), daemon.socket)
    queued = client.enqueue("hold_then_fail_retried", gate.path)
    gate.wait_for(1)
    assert client.ask("cancel", id=queued["id"])["status"] == "RUNNING"
    poll(lambda: any(e.get("event") == "task_cancel_raised" for e in daemon.log_events()))
    gate.open()
    done = client.finished(queued["id"])
    # One worker: a task enqueued now runs after any retry the cancel failed to stop.
    client.finished(client.enqueue("add", 1, 1)["id"])
    after = client.result(queued["id"])
    assert after["status"] == "FAILED"
    assert after["attempts"] == 1
    assert [e["exception_class_path"] for e in after["errors"]] == ["socketsvc.tasks.Cancelled"]
    assert done["finished_at"] == after["finished_at"]
    assert gate.arrived == 1


def test_due_tasks_of_equal_priority_run_in_run_after_order(
    tasks_db, start_tasks_daemon, taskclient, gate
):
    """Two due tasks of one priority: the one whose run_after is earlier runs first, even if
    it was enqueued later (the order is priority, then run_after, then enqueue time)."""
    daemon = start_tasks_daemon(tasks_db.url(), TASK_WORKERS=1)
    client = taskclient(tasks_db.url(), daemon.socket)
    blocker = client.enqueue("hold", gate.path)
    gate.wait_for(1)
    plain = client.enqueue("add", 1, 0)
    earlier = client.enqueue("add", 2, 0, run_after=-60.0)  # due a minute ago
    gate.open()
    for queued in (blocker, plain, earlier):
        client.finished(queued["id"])
    assert client.result(earlier["id"])["started_at"] < client.result(plain["id"])["started_at"]


def test_a_result_reached_while_the_database_is_down_is_recorded_once_it_is_back(
    private_database, start_daemon, taskclient, gate
):
    """The task returns while its database is down: the result waits (the log says so) and is
    written once the server is back, SUCCESSFUL with its value, on the first attempt."""
    server = private_database
    daemon = start_daemon(server.url(), TASK_WORKERS=1)
    client = taskclient(server.url(), daemon.socket)
    queued = client.enqueue("hold", gate.path)
    gate.wait_for(1)
    client.close()
    server.stop()
    try:
        gate.open()  # it returns "released" now, with nowhere to write it
        poll(
            lambda: any(
                e.get("event") == "task_bookkeeping_waits_for_database" for e in daemon.log_events()
            ),
            why=daemon.log,
        )
    finally:
        server.start()
    done = taskclient(server.url(), daemon.socket).finished(queued["id"])
    assert (done["status"], done["return_value"], done["attempts"]) == ("SUCCESSFUL", "released", 1)


def test_sigterm_lets_a_running_task_finish_and_leaves_the_rest_queued(
    tasks_db, start_tasks_daemon, taskclient, gate
):
    """SIGTERM: the running task completes within the drain; tasks not started stay READY."""
    daemon = start_tasks_daemon(tasks_db.url(), TASK_WORKERS=1)
    client = taskclient(tasks_db.url(), daemon.socket)
    running = client.enqueue("hold", gate.path)
    gate.wait_for(1)
    waiting = client.enqueue("add", 5, 5)
    daemon.signal(signal.SIGTERM)
    poll(lambda: "draining" in daemon.log())
    gate.open()
    assert daemon.process.wait(30) == 0
    assert client.result(running["id"])["status"] == "SUCCESSFUL"
    assert client.result(waiting["id"])["status"] == "READY"
    # It recorded its stop, and left no session behind.
    assert tasks_db.query(
        "SELECT COUNT(*) FROM socketsvc_worker WHERE stopped_at IS NULL", db="socketsvc_test"
    ) == [(0,)]
    client.close()
    poll(lambda: tasks_db.sessions() == [])


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_sigkill_during_a_task_leaves_nothing_running_after_restart(
    tasks_db, start_tasks_daemon, taskclient, gate, short_tmp
):
    """SIGKILL mid-task: the next daemon on this host sees its predecessor is dead and requeues
    the run; it then succeeds (WorkerLost recorded). A task without retries fails instead."""
    socket_path = str(short_tmp / "k.sock")
    first = start_tasks_daemon(tasks_db.url(), socket_path=socket_path)
    client = taskclient(tasks_db.url(), socket_path)
    killed = client.enqueue("hold_then_mark", gate.path, "after-kill")
    gate.wait_for(1)
    first.process.kill()
    first.process.wait(10)
    gate.open()
    start_tasks_daemon(tasks_db.url(), socket_path=socket_path)
    done = client.finished(killed["id"])
    assert done["status"] == "FAILED"  # hold_then_mark has no retries: lost, not rerun
    assert done["errors"][-1]["exception_class_path"] == "socketsvc.tasks.WorkerLost"
    assert "stopped before it finished" in done["errors"][-1]["traceback"]
    assert tasks_db.query(
        "SELECT COUNT(*) FROM socketsvc_task WHERE status='RUNNING'", db="socketsvc_test"
    ) == [(0,)]


def test_a_lost_run_with_retries_left_runs_again_after_restart(
    tasks_db, start_tasks_daemon, taskclient, gate, short_tmp
):
    """SIGKILL mid-task with attempts left: the restarted daemon runs it again, to SUCCESSFUL."""
    socket_path = str(short_tmp / "k.sock")
    first = start_tasks_daemon(tasks_db.url(), socket_path=socket_path)
    client = taskclient(tasks_db.url(), socket_path)
    killed = client.enqueue("hold_then_mark_retried", gate.path, "rerun")
    gate.wait_for(1)
    first.process.kill()
    first.process.wait(10)
    gate.open()
    start_tasks_daemon(tasks_db.url(), socket_path=socket_path)
    gate.wait_for(2)
    gate.open()
    done = client.finished(killed["id"])
    assert done["status"] == "SUCCESSFUL"
    assert done["attempts"] == 2
    assert [e["exception_class_path"] for e in done["errors"]] == ["socketsvc.tasks.WorkerLost"]


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_two_daemons_on_one_database_run_each_task_exactly_once(
    tasks_db, start_tasks_daemon, taskclient, short_tmp
):
    """500 tasks that each insert a unique key, two daemons claiming: 500 rows, no error."""
    one = start_tasks_daemon(tasks_db.url(), socket_path=str(short_tmp / "one.sock"))
    two = start_tasks_daemon(tasks_db.url(), socket_path=str(short_tmp / "two.sock"))
    client = taskclient(tasks_db.url(), one.socket)
    ids = [client.enqueue("mark", f"k{n}")["id"] for n in range(500)]
    for daemon in (one, two):
        daemon.call("rpc.tasks.wake")
    poll(
        lambda: (
            tasks_db.query(
                "SELECT COUNT(*) FROM socketsvc_task WHERE status IN ('SUCCESSFUL','FAILED')",
                db="socketsvc_test",
            )
            == [(500,)]
        ),
        timeout=120,
    )
    assert tasks_db.query(
        f"SELECT COUNT(*), COUNT(DISTINCT {tasks_db.quote('key')}) FROM testapp_marker",
        db="socketsvc_test",
    ) == [(500, 500)]
    assert tasks_db.query(
        "SELECT COUNT(*) FROM socketsvc_task WHERE status='SUCCESSFUL'", db="socketsvc_test"
    ) == [(500,)]
    ran_on = tasks_db.query(
        "SELECT COUNT(DISTINCT worker_ids) FROM socketsvc_task", db="socketsvc_test"
    )
    assert ran_on[0][0] == 2  # both daemons took a share
    stored = {
        row[0] for row in tasks_db.query("SELECT id FROM socketsvc_task", db="socketsvc_test")
    }
    assert stored == set(ids)


def backdate_finished(db, result_ids: list[str], days: int) -> None:
    for result_id in result_ids:
        db.query(
            "UPDATE socketsvc_task SET finished_at = finished_at - INTERVAL %s DAY WHERE id = %s",
            [days, result_id],
            db="socketsvc_test",
        )


def remaining(db) -> set[str]:
    return {row[0] for row in db.query("SELECT id FROM socketsvc_task", db="socketsvc_test")}


def test_prunetasks_deletes_only_finished_results_older_than_the_age(tasks_db, daemon, client):
    """prunetasks --older-than 14d: old finished results go; recent, queued and running stay."""
    old = [client.finished(client.enqueue("add", n, 1)["id"])["id"] for n in range(3)]
    recent = client.finished(client.enqueue("add", 9, 9)["id"])["id"]
    waiting = client.enqueue("add", 1, 1, run_after=3600)["id"]
    backdate_finished(tasks_db, old, 30)
    dry = manage(
        "prunetasks", "--older-than", "14d", "--dry-run", env={"DATABASE_URL": tasks_db.url()}
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == "3 finished task result(s) older than 14d would be deleted"
    done = manage("prunetasks", "--older-than", "14d", env={"DATABASE_URL": tasks_db.url()})
    assert done.returncode == 0, done.stderr
    assert "deleted 3" in done.stdout
    assert remaining(tasks_db) == {recent, waiting}
    bad = manage("prunetasks", "--older-than", "soon", env={"DATABASE_URL": tasks_db.url()})
    assert bad.returncode != 0
    assert "give a number" in bad.stderr


def test_task_retention_prunes_by_itself(tasks_db, start_tasks_daemon, taskclient, short_tmp):
    """TASK_RETENTION: the daemon deletes finished results older than it, without being asked."""
    first = start_tasks_daemon(tasks_db.url())
    client = taskclient(tasks_db.url(), first.socket)
    old = client.finished(client.enqueue("add", 1, 1)["id"])["id"]
    recent = client.finished(client.enqueue("add", 2, 2)["id"])["id"]
    backdate_finished(tasks_db, [old], 2)
    assert first.stop() == 0
    start_tasks_daemon(tasks_db.url(), TASK_RETENTION=86400)
    poll(lambda: remaining(tasks_db) == {recent})


def test_status_reports_task_counts_and_the_runner(daemon, client):
    """rpc.status (and socketctl status) show the task counts by status and what is running."""
    for n in range(3):
        client.finished(client.enqueue("add", n, n)["id"])
    client.finished(client.enqueue("fail", "x")["id"])
    status = poll(
        lambda: (s := daemon.call("rpc.status")["tasks"])["counts"].get("SUCCESSFUL") == 3 and s
    )
    assert status["counts"] == {
        "READY": 0,
        "RUNNING": 0,
        "FAILED": 1,
        "SUCCESSFUL": 3,
        "WAITING": 0,
    }
    assert status["workers"] == 2
    assert status["running"] == []
    shown = manage("socketctl", "--socket", daemon.socket, "status")
    assert '"SUCCESSFUL": 3' in shown.stdout


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_worker_processes_share_the_tasks_and_recover_a_killed_ones_run(
    tasks_db, start_tasks_daemon, taskclient, gate, short_tmp
):
    """--processes 2: 300 tasks that each insert a unique key run once each, on both
    processes; a worker process killed mid-task is replaced, and its run is requeued and
    succeeds (WorkerLost recorded) while the master and the other process never stopped."""
    daemon = start_tasks_daemon(tasks_db.url(), "--processes", "2")
    client = taskclient(tasks_db.url(), daemon.socket)
    held = client.enqueue("hold_then_mark_retried", gate.path, "held")
    gate.wait_for(1)
    claimed = tasks_db.query(
        "SELECT w.pid FROM socketsvc_task t JOIN socketsvc_worker w ON w.id = t.claimed_by "
        "WHERE t.id = %s",
        [held["id"]],
        db="socketsvc_test",
    )
    os.kill(claimed[0][0], signal.SIGKILL)
    gate.wait_for(2)  # run again, by the sibling or the replacement
    gate.open()
    done = client.finished(held["id"])
    assert done["status"] == "SUCCESSFUL"
    assert [e["exception_class_path"] for e in done["errors"]] == ["socketsvc.tasks.WorkerLost"]
    for n in range(300):
        client.enqueue("mark", f"p{n}")
    poll(
        lambda: (
            tasks_db.query(
                "SELECT COUNT(*) FROM socketsvc_task WHERE status IN ('SUCCESSFUL','FAILED')",
                db="socketsvc_test",
            )
            == [(301,)]
        ),
        timeout=120,
    )
    assert tasks_db.query(
        f"SELECT COUNT(*), COUNT(DISTINCT {tasks_db.quote('key')}) FROM testapp_marker",
        db="socketsvc_test",
    ) == [(301, 301)]
    pids = tasks_db.query(
        "SELECT COUNT(DISTINCT w.pid) FROM socketsvc_task t JOIN socketsvc_worker w "
        f"ON {tasks_db.as_text('t.worker_ids')} LIKE CONCAT('%%', w.id, '%%') "
        "WHERE t.task_path LIKE '%%.mark'",
        db="socketsvc_test",
    )
    assert pids[0][0] >= 2  # more than one worker process took a share
    assert daemon.process.poll() is None


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_full_queue_is_claimed_in_batches_and_each_task_runs_once(
    tasks_db, start_tasks_daemon, taskclient, short_tmp
):
    """300 tasks enqueued at once (one commit, one wake-up) while two daemons' four task
    threads each are idle: the woken thread's claim takes a task for itself and each idle
    thread (tasks sharing a claim's moment), and every task runs exactly once (a second run
    would fail on its marker's unique key)."""
    daemons = [
        start_tasks_daemon(
            tasks_db.url(), socket_path=str(short_tmp / f"{name}.sock"), TASK_WORKERS=4
        )
        for name in ("one", "two")
    ]
    for daemon in daemons:  # registered, every task thread idle
        poll(lambda d=daemon: d.call("rpc.status")["tasks"]["worker_id"], why=daemon.log)
    client = taskclient(tasks_db.url(), daemons[0].socket)
    ids = client.ask("enqueue_many", task="mark", calls=[[[f"b{n}"], {}] for n in range(300)])
    poll(
        lambda: (
            tasks_db.query(
                "SELECT COUNT(*) FROM socketsvc_task WHERE status = 'SUCCESSFUL'",
                db="socketsvc_test",
            )
            == [(300,)]
        ),
        timeout=120,
    )
    assert tasks_db.query("SELECT COUNT(*) FROM testapp_marker", db="socketsvc_test") == [(300,)]
    # A claim's moment is every run's started_at it took (to the microsecond).
    batches = tasks_db.query(
        "SELECT started_at, COUNT(*) FROM socketsvc_task GROUP BY started_at HAVING COUNT(*) > 1",
        db="socketsvc_test",
    )
    assert batches, "no claim took more than one task"
    assert max(count for _, count in batches) <= 4
    assert len(ids) == 300
