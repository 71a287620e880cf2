"""Django's PostgreSQL connection pool (``OPTIONS["pool"]``, psycopg 3) under the daemon.

A pooled connection idles in the pool, not in a wrapper the lifecycle checks,
so these tests prove the pool's checkouts are checked too: sessions the server
dropped while pooled never reach a handler.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from socketsvc.client import RemoteError
from socketsvc.protocol import DATABASE_UNAVAILABLE
from tests.harness.waiting import poll

POOL = {"env": {"TEST_DB_POOL": "2,4"}}


def test_pooled_sessions_dropped_by_idle_session_timeout_never_reach_a_handler(
    postgresql, start_daemon
):
    """Sessions the server ends while they sit in the pool are replaced on checkout."""
    postgresql.set_wait_timeout(1)
    daemon = start_daemon(postgresql.url(), "--workers", "2", **POOL)
    assert daemon.call("testapp.write_note", text="pooled") >= 1
    poll(lambda: postgresql.sessions() != [], timeout=10)
    poll(lambda: postgresql.sessions() == [], timeout=20, interval=0.2)
    assert [daemon.call("testapp.count_notes", text="pooled") for _ in range(5)] == [1] * 5
    status = daemon.call("rpc.status")
    assert status["errors"] == 0
    assert status["dead_connections_replaced"] >= 1


def test_pooled_sessions_terminated_between_requests_are_replaced(postgresql, start_daemon):
    """pg_terminate_backend on every pooled session: the next requests succeed."""
    daemon = start_daemon(postgresql.url(), "--workers", "2", **POOL)
    first = daemon.call("testapp.connection_id")
    assert postgresql.kill_sessions()
    assert daemon.call("testapp.connection_id") != first
    assert daemon.call("testapp.write_note", text="after-terminate") >= 1
    assert daemon.call("rpc.status")["errors"] == 0


def test_pool_survives_a_server_restart(private_postgresql, start_daemon):
    """After PostgreSQL restarts, the pool's dead connections are replaced, not handed out."""
    daemon = start_daemon(private_postgresql.url(), "--workers", "2", **POOL)
    for _ in range(4):
        daemon.call("testapp.connection_id")
    private_postgresql.stop()
    private_postgresql.start()
    assert [daemon.call("testapp.count_notes") for _ in range(6)] == [0] * 6
    assert daemon.call("rpc.status")["errors"] == 0


def test_with_the_server_down_a_pooled_request_waits_db_unavailable_wait_not_the_pools_timeout(
    private_postgresql, start_daemon, short_tmp
):
    """psycopg_pool's own timeout is 30 s: a request while the server is down gets -32001 after
    about DB_UNAVAILABLE_WAIT (2 s) all the same, and the daemon serves again once it is back."""
    daemon = start_daemon(private_postgresql.url(), "--workers", "2", **POOL, DB_UNAVAILABLE_WAIT=2)
    assert daemon.call("testapp.count_notes") == 0
    private_postgresql.stop()
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError) as down:
            daemon.call("testapp.count_notes", timeout=60)
        waited = time.monotonic() - started
    finally:
        private_postgresql.start()
    assert 1.5 <= waited < 10, waited  # the pool's own timeout would take 30 s
    assert down.value.code == DATABASE_UNAVAILABLE
    assert daemon.call("testapp.count_notes") == 0


def test_a_full_pool_is_waited_for_up_to_its_own_timeout(postgresql, start_daemon, short_tmp, gate):
    """One pooled connection, two workers, the server up: while a handler holds the connection
    past DB_UNAVAILABLE_WAIT (1 s), another request waits for it (a full pool is not an
    unreachable server) and is answered once it is given back."""
    daemon = start_daemon(
        postgresql.url(), "--workers", "3", env={"TEST_DB_POOL": "1,1"}, DB_UNAVAILABLE_WAIT=1
    )
    held: list[object] = []
    holder = threading.Thread(
        target=lambda: held.append(daemon.call("testapp.query_then_hold", gate=gate.path))
    )
    holder.start()
    gate.wait_for(1)
    answered: list[object] = []
    waiter = threading.Thread(
        target=lambda: answered.append(daemon.call("testapp.count_notes", timeout=60))
    )
    waiter.start()
    poll(lambda: daemon.call("rpc.status")["busy_workers"] == 2)
    # A later request, on the third worker and needing no database, lasts three times
    # DB_UNAVAILABLE_WAIT: once it is answered, the waiter must still be waiting.
    assert daemon.call("testapp.sleep", seconds=3.0) == 3.0
    assert waiter.is_alive(), answered
    gate.open()
    waiter.join(30)
    holder.join(30)
    assert len(held) == 1
    assert answered == held  # the same count of notes, read while held and after
    assert daemon.call("rpc.status")["errors"] == 0


def test_pool_in_worker_processes_bounds_sessions_and_leaves_none_at_shutdown(
    postgresql, start_daemon
):
    """Two worker processes, each with its own pool: 8 clients are served, the sessions stay
    within two pools' maximum, and none are left once the daemon stopped."""
    daemon = start_daemon(postgresql.url(), "--processes", "2", "--workers", "4", **POOL)
    failures: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(20):
                daemon.call("testapp.write_note", text=f"pool-{n}-{i}")
        except BaseException as exc:
            failures.append(exc)

    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(60)
    assert failures == []
    assert 0 < len(postgresql.sessions()) <= 2 * 4
    assert daemon.call("testapp.count_notes") >= 160
    daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(30) == 0
    poll(lambda: postgresql.sessions() == [], timeout=10)


def test_a_forked_child_never_uses_its_parents_pooled_session(postgresql, start_daemon):
    """A handler that forks: the child queries on a session of its own, and the parent's
    session is intact afterwards."""
    daemon = start_daemon(postgresql.url(), "--workers", "1", **POOL)
    outcome = daemon.call("testapp.fork_and_query")
    assert outcome["child_exit"] == 0, outcome
    assert outcome["after"] == outcome["before"]
    assert daemon.call("rpc.status")["errors"] == 0
