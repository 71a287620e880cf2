"""Wake-ups reach whoever has an idle task worker: a sibling process, another host's daemon.

A wake-up is only a hint (the safety sweep, 30 s, finds every task anyway); each test
here makes the only wake-up land where no task worker is free and checks that the task
starts long before the sweep could have started it.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.harness.daemon import RawClient
from tests.harness.gate import Gate
from tests.harness.taskclient import seconds_between
from tests.harness.waiting import poll

VENDORS = ("mariadb", "postgresql")
# Far below TASK_SWEEP_INTERVAL (30 s): a task started within this was woken, not swept;
# the margin is for a busy machine.
WOKEN_WITHIN = 5.0


def started_after(result: dict) -> float:
    return seconds_between(result["enqueued_at"], result["started_at"])


def connection_to(socket_path: str, pid: int) -> RawClient:
    """Connect until the process *pid* of a daemon with worker processes serves the
    connection (each connection goes to one process); return that connection."""
    for _ in range(200):
        client = RawClient(socket_path)
        client.request({"jsonrpc": "2.0", "method": "rpc.status", "id": 1})
        if client.reply()["result"]["pid"] == pid:
            return client
        client.close()
    raise AssertionError(f"no connection reached process {pid}")


def test_a_wake_that_reaches_a_busy_worker_process_starts_the_task_on_its_sibling(
    start_daemon, sqlite_url, taskclient, gate, short_tmp
):
    """--processes 2, one task worker each, on SQLite (no wake-ups through the database): the
    only wake-up for a task goes to the process whose worker is busy; it passes the wake to
    its sibling through the master, which starts the task at once."""
    daemon = start_daemon(sqlite_url, "--processes", "2", TASK_WORKERS=1)
    client = taskclient(sqlite_url, daemon.socket)
    held = client.enqueue("hold", gate.path)
    gate.wait_for(1)
    database = sqlite_url.removeprefix("sqlite:///")
    [(busy_pid,)] = (
        sqlite3.connect(database)
        .execute(
            "SELECT w.pid FROM socketsvc_task t JOIN socketsvc_worker w ON w.id = t.claimed_by "
            "WHERE t.id = ?",
            [held["id"]],
        )
        .fetchall()
    )
    unheard = taskclient(sqlite_url, str(short_tmp / "nobody-listens.sock"))
    queued = unheard.enqueue("add", 1, 1)  # its own wake-up reaches no daemon
    with connection_to(daemon.socket, busy_pid) as busy:
        busy.request({"jsonrpc": "2.0", "method": "rpc.tasks.wake", "params": {"queue": "default"}})
        done = client.finished(queued["id"], timeout=WOKEN_WITHIN * 2)
    assert started_after(done) < WOKEN_WITHIN
    assert client.result(held["id"])["status"] == "RUNNING"
    gate.open()


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_task_enqueued_where_the_daemon_is_busy_starts_on_another_daemon(
    clean_tasks, start_daemon, taskclient, gate, short_tmp
):
    """Two daemons on one database (two hosts, as far as they know): the one the enqueuing
    process wakes is busy; the other hears of the task through the database (PostgreSQL's
    NOTIFY, MySQL's look for due tasks) and starts it at once."""
    url = clean_tasks.url()
    busy = start_daemon(url, socket_path=str(short_tmp / "a.sock"), TASK_WORKERS=1)
    client = taskclient(url, busy.socket)
    held = client.enqueue("hold", gate.path)
    gate.wait_for(1)
    start_daemon(url, socket_path=str(short_tmp / "b.sock"), TASK_WORKERS=1)
    poll(
        lambda: len(clean_tasks.query("SELECT id FROM socketsvc_worker", db="socketsvc_test")) == 2
    )
    done = client.finished(client.enqueue("add", 2, 2)["id"], timeout=WOKEN_WITHIN * 2)
    assert started_after(done) < WOKEN_WITHIN
    assert client.result(held["id"])["status"] == "RUNNING"
    gate.open()


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_task_enqueued_by_a_host_with_no_daemon_starts_at_once(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    """A web host with no daemon (its wake-up reaches nothing): the daemon elsewhere hears of
    the task through the database and starts it at once."""
    url = clean_tasks.url()
    start_daemon(url, socket_path=str(short_tmp / "a.sock"), TASK_WORKERS=1)
    poll(lambda: clean_tasks.query("SELECT id FROM socketsvc_worker", db="socketsvc_test"))
    web = taskclient(url, str(short_tmp / "no-daemon-here.sock"))
    done = web.finished(web.enqueue("add", 3, 3)["id"], timeout=WOKEN_WITHIN * 2)
    assert started_after(done) < WOKEN_WITHIN


def watchers(database, socket_path: str) -> dict[int, int]:
    """Return {pid: session} of the worker processes of a daemon that watch the database,
    once each process has either its watcher's session or said another process watches."""
    pids = [
        pid
        for (pid,) in database.query(
            "SELECT pid FROM socketsvc_worker WHERE stopped_at IS NULL", db="socketsvc_test"
        )
    ]
    assert len(pids) == 2, pids

    def wakes_of(pid: int) -> dict:
        with connection_to(socket_path, pid) as client:
            client.request({"jsonrpc": "2.0", "method": "rpc.status", "id": 1})
            return client.reply()["result"]["tasks"]["wakes"]

    def settled() -> dict[int, dict] | None:
        seen = {pid: wakes_of(pid) for pid in pids}
        if all(wakes.get("session") or "session" not in wakes for wakes in seen.values()):
            return seen
        return None

    seen = poll(settled)
    return {pid: wakes["session"] for pid, wakes in seen.items() if wakes.get("session")}


def watching_pid(database, socket_path: str) -> int:
    """Return the pid of the one worker process of a daemon that watches the database."""
    found = watchers(database, socket_path)
    assert len(found) == 1, found
    return next(iter(found))


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_daemon_of_two_processes_watches_the_database_on_one_session(
    clean_tasks, start_daemon, short_tmp
):
    """--processes 2, CONN_MAX_AGE=0, nothing to do: between heartbeats the daemon holds one
    session, its one watcher's (each process used to hold a watcher of its own)."""
    daemon = start_daemon(clean_tasks.url(), "--processes", "2", TASK_WORKERS=1)
    poll(
        lambda: len(clean_tasks.query("SELECT id FROM socketsvc_worker", db="socketsvc_test")) == 2
    )
    found = watchers(clean_tasks, daemon.socket)
    assert len(found) == 1, found
    [session] = found.values()
    poll(lambda: [id for id, _ in clean_tasks.sessions("socketsvc_test")] == [session], timeout=20)


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_what_the_watcher_hears_while_its_workers_are_busy_starts_on_its_sibling(
    clean_tasks, start_daemon, taskclient, gate, short_tmp
):
    """--processes 2, one task worker each; the process that watches the database is busy,
    its sibling idle: a task from a host with no daemon (its wake-up reaches nothing) is
    heard by the watcher, which passes it to its sibling through the master."""
    url = clean_tasks.url()
    daemon = start_daemon(url, "--processes", "2", TASK_WORKERS=1)
    client = taskclient(url, daemon.socket)
    poll(
        lambda: len(clean_tasks.query("SELECT id FROM socketsvc_worker", db="socketsvc_test")) == 2
    )
    watcher = watching_pid(clean_tasks, daemon.socket)

    def holder(task_id: str) -> int:
        [(pid,)] = clean_tasks.query(
            "SELECT w.pid FROM socketsvc_task t JOIN socketsvc_worker w ON w.id = t.claimed_by "
            "WHERE t.id = %s",
            [task_id],
            db="socketsvc_test",
        )
        return int(pid)

    first = client.enqueue("hold", gate.path)
    gate.wait_for(1)
    with Gate(short_tmp / "second.sock") as second_gate:
        on_watcher = first
        if holder(first["id"]) != watcher:
            # The sibling holds the first: hold the watcher's worker too, then free the sibling.
            on_watcher = client.enqueue("hold", second_gate.path)
            second_gate.wait_for(1)
            assert holder(on_watcher["id"]) == watcher
            gate.open()
            client.finished(first["id"])
        web = taskclient(url, str(short_tmp / "no-daemon-here.sock"))
        done = web.finished(web.enqueue("add", 4, 4)["id"], timeout=WOKEN_WITHIN * 2)
        assert started_after(done) < WOKEN_WITHIN
        # The watcher's one worker was held all along: its sibling ran the task.
        assert client.result(on_watcher["id"])["status"] == "RUNNING"
        second_gate.open()
    gate.open()
