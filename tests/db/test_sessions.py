"""The daemon holds no more database sessions than it needs, and none after it stops."""

from __future__ import annotations

import threading
import time

from tests.harness.waiting import poll


def hold_every_worker(daemon, gate, workers: int) -> list[threading.Thread]:
    """Start one query_then_hold call per worker; return once all of them wait at the gate."""
    callers = [
        threading.Thread(target=daemon.call, args=("testapp.query_then_hold", gate.path))
        for _ in range(workers)
    ]
    for caller in callers:
        caller.start()
    gate.wait_for(workers)
    return callers


def test_no_session_held_while_idle_with_conn_max_age_0(database, start_daemon):
    """With CONN_MAX_AGE=0 every request's connection is closed before its reply is sent."""
    daemon = start_daemon(database.url(), conn_max_age="0")
    for _ in range(5):
        daemon.call("testapp.write_note", text="max-age-0")
        # The close happened before the reply; the server forgets it a moment later.
        poll(lambda: database.sessions() == [], timeout=5)
    assert daemon.call("rpc.status")["db_connects"] >= 5


def test_connections_closed_in_good_order_are_not_counted_as_reconnects(database, start_daemon):
    """CONN_MAX_AGE=0 opens a connection per request on a healthy database: connects, not
    reconnects (a reconnect replaces a connection that died)."""
    daemon = start_daemon(database.url(), "--workers", "2", conn_max_age="0")
    for _ in range(11):
        daemon.call("testapp.write_note", text="orderly")
    status = daemon.call("rpc.status")
    assert status["db_connects"] >= 11
    assert status["db_reconnects"] == 0

    def request_lines() -> list[dict[str, object]] | None:
        # Each request's line is written just after its reply: wait for the last one.
        found = [e for e in daemon.log_events() if e.get("method") == "testapp.write_note"]
        return found if len(found) == 11 else None

    lines = poll(request_lines, why=daemon.log)
    assert [line["db_reconnects"] for line in lines] == [0] * 11


def test_persistent_sessions_bounded_by_workers_and_age_out(database, start_daemon, gate):
    """With CONN_MAX_AGE>0 each worker opens one connection and reuses it; it closes once aged."""
    workers = 3
    daemon = start_daemon(database.url(), "--workers", str(workers), conn_max_age="3")
    connects_before = daemon.call("rpc.status")["db_connects"]
    callers = hold_every_worker(daemon, gate, workers)
    assert len(database.sessions()) == workers
    gate.open()
    for caller in callers:
        caller.join(30)
    for n in range(4 * workers):
        daemon.call("testapp.write_note", text=f"reuse-{n}")
    assert daemon.call("rpc.status")["db_connects"] - connects_before == workers
    assert len(database.sessions()) <= workers
    # Idle workers close their connections once CONN_MAX_AGE has passed.
    poll(lambda: database.sessions() == [], timeout=15)
    assert daemon.call("rpc.ping") == "pong"


def test_no_session_left_after_shutdown(database, start_daemon, gate):
    """SIGTERM closes every session the daemon held."""
    daemon = start_daemon(database.url(), "--workers", "4", conn_max_age="none")
    callers = hold_every_worker(daemon, gate, 4)
    assert len(database.sessions()) == 4
    gate.open()
    for caller in callers:
        caller.join(30)
    assert daemon.stop() == 0
    poll(lambda: database.sessions() == [], timeout=10)


def test_a_connection_opened_after_an_idle_pause_is_not_taken_for_an_idle_one(
    database, start_daemon
):
    """CONN_MAX_AGE=0, one worker: a handler whose first database access is
    transaction.atomic() opens its connection more than DB_CHECK_AFTER_IDLE after the
    thread's last query, and succeeds (the check before the first cursor must not ping a
    connection being opened: on PostgreSQL autocommit is still off then, and the ping's
    transaction would make Django's switch to autocommit fail)."""
    daemon = start_daemon(database.url(), "--workers", "1", conn_max_age="0")
    assert daemon.call("testapp.pause_in_atomic_then_query", seconds=0) >= 0
    time.sleep(1.5)  # longer than DB_CHECK_AFTER_IDLE (1 s): the pause is what is tested
    assert daemon.call("testapp.pause_in_atomic_then_query", seconds=0) >= 0
    assert daemon.call("rpc.status")["errors"] == 0


def test_an_idle_task_daemon_connects_only_for_its_heartbeat_and_lets_sessions_go(
    database, start_daemon, short_tmp
):
    """CONN_MAX_AGE=1, two task workers, nothing to do: per heartbeat the daemon opens at most
    the heartbeat's own two connections (the lease's renewal, the look for lost daemons): its
    task threads used to wake at each connection's expiry, claim on a new one and sleep again.
    Between heartbeats it holds no session but the one that hears of tasks committed
    elsewhere (PostgreSQL's LISTEN, MySQL's look for due tasks: see test_wakes.py)."""
    daemon = start_daemon(
        database.url(),
        conn_max_age="1",
        TASK_WORKERS=2,
        TASK_HEARTBEAT=2.5,
    )

    def heartbeat() -> object:
        rows = database.query(
            "SELECT heartbeat_at FROM socketsvc_worker WHERE stopped_at IS NULL",
            db="socketsvc_test",
        )
        return rows[0][0] if rows else None

    def next_heartbeat(after: object) -> object:
        return poll(lambda: (beat := heartbeat()) is not None and beat != after and beat)

    beat = next_heartbeat(None)
    beat = next_heartbeat(beat)
    # rpc.status has the task counts read (a connection of their own) when they are older
    # than 5 s: let that read happen before counting, the status calls below find them fresh.
    poll(lambda: daemon.call("rpc.status")["tasks"]["counts_age"] is not None)
    watcher = poll(lambda: daemon.call("rpc.status")["tasks"]["wakes"]["session"])
    connects = daemon.call("rpc.status")["db_connects"]

    def sessions_but_the_watchers() -> list:
        return [session for session in database.sessions() if session[0] != watcher]

    for _ in range(2):
        beat = next_heartbeat(beat)
        poll(lambda: sessions_but_the_watchers() == [], timeout=2.4)
    assert daemon.call("rpc.status")["db_connects"] - connects <= 2 * 2
