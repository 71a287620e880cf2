"""A task never stays RUNNING under a live daemon, whatever the database does to the daemon's
own writes: a claim whose commit is in doubt, a write that loses a lock race, an ending the
database will not take.

Real daemons on a real MariaDB or PostgreSQL; the commit in doubt is made by a proxy that
drops the connection after the server committed a claim (tests/harness/commitcut.py).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.harness.commitcut import CommitCut
from tests.harness.waiting import poll

VENDORS = ("mariadb", "postgresql")


def events(daemon, name: str) -> list[dict]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def through(server, path) -> str:
    """Return the server's DATABASE_URL, its socket replaced by *path* (same file name)."""
    if server.vendor == "postgresql":
        return server.url().replace(
            quote(server.socket_dir, safe=""), quote(str(path.parent), safe="")
        )
    return server.url().replace(quote(server.socket, safe=""), quote(str(path), safe=""))


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_task_taken_by_a_claim_whose_commit_was_cut_is_put_back_and_runs_once(
    clean_tasks, start_daemon, short_tmp, taskclient
):
    """The connection breaks after the server committed a claim, before the daemon heard: the
    task is RUNNING under a daemon that does not know it. The daemon finds it by the claim's
    moment, puts it back without counting an attempt, and runs it: SUCCESSFUL, one attempt."""
    name = ".s.PGSQL.5432" if clean_tasks.vendor == "postgresql" else "db.sock"
    with CommitCut(short_tmp / name, clean_tasks.socket, clean_tasks.vendor) as proxy:
        daemon = start_daemon(through(clean_tasks, short_tmp / name), TASK_WORKERS=1)
        client = taskclient(clean_tasks.url(), daemon.socket)
        proxy.arm()
        queued = client.enqueue("add", 2, 3)
        proxy.wait_for_cut()
        done = client.finished(queued["id"])
    assert done["status"] == "SUCCESSFUL", done["errors"]
    assert done["return_value"] == 5
    assert done["attempts"] == 1
    assert done["errors"] == []
    assert [e["task_id"] for e in events(daemon, "task_claim_put_back")] == [queued["id"]]
    assert daemon.process.poll() is None


@pytest.mark.parametrize(
    "ending",
    [("hold", "SUCCESSFUL", []), ("hold_then_fail", "FAILED", ["builtins.ValueError"])],
    ids=["result", "failure"],
)
@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_an_ending_that_waits_out_a_lock_is_written_once_the_lock_goes(
    clean_tasks, start_daemon, taskclient, gate, ending
):
    """Another session holds the task's row locked as the run ends, past the daemon's lock wait
    timeout (1 s): the ending (a result, or a failure with its error) is written once the lock
    goes, not refused as a result the database cannot store, never left RUNNING."""
    task, status, errors = ending
    if clean_tasks.vendor == "postgresql":
        url = f"{clean_tasks.url()}?options={quote('-c lock_timeout=1000')}"
    else:
        url = f"{clean_tasks.url()}?init_command={quote('SET SESSION innodb_lock_wait_timeout=1')}"
    daemon = start_daemon(url, TASK_WORKERS=1)
    client = taskclient(clean_tasks.url(), daemon.socket)
    queued = client.enqueue(task, gate.path)
    gate.wait_for(1)
    with clean_tasks.holding_row_lock("socketsvc_task", queued["id"]):
        gate.open()
        poll(lambda: len(events(daemon, "task_bookkeeping_conflict")) >= 2, why=daemon.log)
    done = client.finished(queued["id"])
    assert done["status"] == status, done["errors"]
    assert [e["exception_class_path"] for e in done["errors"]] == errors
    if status == "SUCCESSFUL":
        assert done["return_value"] == "released"


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_run_whose_ending_the_database_refuses_is_taken_back_as_lost(
    clean_tasks, start_daemon, taskclient
):
    """A trigger refuses any ending of the task's first claim, the result and the failure
    alike: the run cannot be recorded, and the live daemon takes it back as a lost run rather
    than leave it RUNNING. Its retry policy runs it again, and the second run is recorded."""
    daemon = start_daemon(clean_tasks.url(), TASK_WORKERS=1)
    client = taskclient(clean_tasks.url(), daemon.socket)
    with clean_tasks.refusing_first_endings():
        queued = client.enqueue("flaky", 0)
        done = client.finished(queued["id"])
    assert done["status"] == "SUCCESSFUL", done["errors"]
    assert done["return_value"] == 2
    assert done["attempts"] == 2
    assert [e["exception_class_path"] for e in done["errors"]] == ["socketsvc.tasks.WorkerLost"]
    assert [e["task_id"] for e in events(daemon, "task_run_taken_back")] == [queued["id"]]
    assert daemon.process.poll() is None


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_every_task_of_a_batch_claim_whose_commit_was_cut_is_put_back_and_runs_once(
    clean_tasks, start_daemon, short_tmp, taskclient
):
    """Four idle task threads; three tasks enqueued at once are taken by one claim (one
    statement, one commit, for the woken thread and two idle ones); that commit is cut. Each
    of the three is put back without counting an attempt, then runs once."""
    name = ".s.PGSQL.5432" if clean_tasks.vendor == "postgresql" else "db.sock"
    with CommitCut(short_tmp / name, clean_tasks.socket, clean_tasks.vendor) as proxy:
        daemon = start_daemon(through(clean_tasks, short_tmp / name), TASK_WORKERS=4)
        client = taskclient(clean_tasks.url(), daemon.socket)
        poll(lambda: daemon.call("rpc.status")["tasks"]["worker_id"], why=daemon.log)
        proxy.arm()
        ids = client.ask("enqueue_many", task="add", calls=[[[n, 1], {}] for n in range(3)])
        proxy.wait_for_cut()
        done = [client.finished(task_id) for task_id in ids]
    assert [(d["status"], d["attempts"], d["errors"]) for d in done] == [("SUCCESSFUL", 1, [])] * 3
    assert sorted(e["task_id"] for e in events(daemon, "task_claim_put_back")) == sorted(ids)
