"""Database faults between and during requests: the daemon answers clearly and recovers.

Every test runs on a throwaway MariaDB and a throwaway PostgreSQL (``database``
and ``private_database`` are parametrized by vendor).
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from socketsvc import DatabaseUnavailable
from socketsvc.protocol import DATABASE_UNAVAILABLE
from tests.harness.daemon import REPO, manage_env
from tests.harness.waiting import poll


def slow_query_in_background(daemon) -> tuple[threading.Thread, dict[str, BaseException]]:
    """Start a 30 s sleep on the server in a thread; the dict gets its exception, if any."""
    outcome: dict[str, BaseException] = {}

    def slow_query() -> None:
        try:
            daemon.call("testapp.db_sleep", seconds=30)
        except BaseException as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=slow_query)
    caller.start()
    return caller, outcome


@pytest.mark.parametrize("health_checks", [False, True], ids=["hc-off", "hc-on"])
def test_killed_session_between_requests_is_replaced_transparently(
    database, start_daemon, health_checks
):
    """After KILL of its idle DB sessions, the next requests succeed on new sessions."""
    daemon = start_daemon(
        database.url(), "--workers", "1", conn_max_age="none", health_checks=health_checks
    )
    before = daemon.call("testapp.connection_id")
    assert database.kill_sessions() == [before]
    after = daemon.call("testapp.connection_id")
    assert after != before
    assert daemon.call("testapp.write_note", text="after-kill") >= 1
    assert daemon.call("rpc.status")["errors"] == 0
    # The request that met the dead session says so in its log line.
    lines = [e for e in daemon.log_events() if e.get("method") == "testapp.connection_id"]
    assert [line["db_reconnects"] for line in lines] == [0, 1]


def test_session_killed_during_a_query_fails_that_request_only(database, start_daemon):
    """A KILL mid-query gives the client error -32001; the next request succeeds."""
    daemon = start_daemon(database.url(), "--workers", "1", conn_max_age="60")
    caller, outcome = slow_query_in_background(daemon)
    sleeping = poll(
        lambda: [s for s, command in database.sessions() if command == "Query"], timeout=20
    )
    assert database.kill_session(sleeping[0])
    caller.join(30)
    error = outcome["error"]
    assert isinstance(error, DatabaseUnavailable)
    assert error.code == DATABASE_UNAVAILABLE
    assert error.data["db_code"] in database.lost_codes
    assert "Traceback" not in error.message
    assert daemon.call("testapp.connection_id") != sleeping[0]


@pytest.mark.parametrize("health_checks", [False, True], ids=["hc-off", "hc-on"])
def test_server_restart_between_requests_is_survived(private_database, start_daemon, health_checks):
    """After the server restarts, the daemon's next requests succeed without a daemon restart."""
    daemon = start_daemon(private_database.url(), conn_max_age="none", health_checks=health_checks)
    for _ in range(4):
        daemon.call("testapp.connection_id")
    private_database.stop()
    private_database.start()
    assert [daemon.call("testapp.count_notes") for _ in range(6)] == [0] * 6
    assert daemon.call("rpc.status")["errors"] == 0


def test_server_down_gives_clear_error_and_daemon_recovers(private_database, start_daemon):
    """While the server is down requests get -32001 and pings still work; once it is back, all is well."""
    daemon = start_daemon(private_database.url(), conn_max_age="60")
    assert daemon.call("testapp.write_note", text="before-outage") == 1
    private_database.stop()

    for _ in range(3):
        with pytest.raises(DatabaseUnavailable) as caught:
            daemon.call("testapp.count_notes")
        assert caught.value.code == DATABASE_UNAVAILABLE
        assert "Database unavailable" in caught.value.message
        assert caught.value.data["db_code"] in private_database.down_codes
        assert daemon.call("rpc.ping") == "pong"
    assert daemon.call("testapp.sleep", seconds=0) == 0

    private_database.start()
    assert daemon.call("testapp.count_notes", text="before-outage") == 1
    assert daemon.call("testapp.write_note", text="after-outage") == 2
    assert daemon.process.poll() is None


def test_daemon_starts_while_the_server_is_down(private_database, start_daemon):
    """A daemon started during an outage serves pings, errors clearly, and recovers later."""
    private_database.stop()
    daemon = start_daemon(private_database.url(), ready=False)
    assert daemon.call("rpc.ping") == "pong"
    with pytest.raises(DatabaseUnavailable):
        daemon.call("testapp.count_notes")
    private_database.start()
    assert daemon.call("testapp.count_notes") == 0


def test_raw_driver_connection_closed_behind_djangos_back(database, start_daemon):
    """A handler that closes the driver connection itself does not break later requests."""
    daemon = start_daemon(database.url(), "--workers", "1", conn_max_age="none")
    assert daemon.call("testapp.break_driver_connection") == "closed"
    assert daemon.call("testapp.state")["in_atomic_block"] is False
    assert daemon.call("rpc.status")["errors"] == 0


def test_long_handler_idle_past_wait_timeout_then_next_request(database, start_daemon):
    """A handler that sleeps past wait_timeout with a connection open does not poison the next request."""
    database.set_wait_timeout(1)
    daemon = start_daemon(database.url(), "--workers", "1", conn_max_age="none")
    daemon.call("testapp.sleep", seconds=0)
    first = daemon.call("testapp.connection_id")
    assert daemon.call("testapp.sleep", seconds=2.5) == 2.5
    assert daemon.call("testapp.connection_id") != first


def test_kill_query_fails_the_request_but_keeps_the_session(database, start_daemon):
    """KILL QUERY interrupts the statement (a handler error), and the still-usable session is kept."""
    daemon = start_daemon(database.url(), "--workers", "1", conn_max_age="none")
    session = daemon.call("testapp.connection_id")
    caller, outcome = slow_query_in_background(daemon)
    poll(lambda: (session, "Query") in database.sessions())
    database.kill_query(session)
    caller.join(30)
    # SLEEP() interrupted returns 1 rather than raising on MariaDB; either way
    # the request ended early and the session survives.
    assert "error" not in outcome or outcome["error"].data["db_code"] == database.interrupted_code
    assert daemon.call("testapp.connection_id") == session


def test_refresh_connections_lets_a_loop_outside_any_scope_query_again(database):
    """A loop of the user's own, outside request_scope (where nothing else replaces a dead
    connection): after a pause past the server's idle timeout its next query fails, unless it
    calls refresh_connections() first."""
    database.set_wait_timeout(1)

    def after_pause(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tests.harness.outside_scope", "2.5", mode],
            cwd=REPO,
            env=manage_env({"DATABASE_URL": database.url(), "TEST_CONN_MAX_AGE": "none"}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    outcome, _, code = after_pause("plain").partition(" ")
    assert outcome == "error"
    assert code in {str(c) for c in database.idle_dropped_codes}
    assert after_pause("refresh") == "ok"


@pytest.mark.parametrize("health_checks", [False, True], ids=["plain", "health-checks"])
def test_handler_idle_between_its_queries_gets_a_live_connection(
    database, start_daemon, health_checks
):
    """Query, pause past wait_timeout, query again: the second query runs on a fresh connection."""
    database.set_wait_timeout(1)
    daemon = start_daemon(
        database.url(), "--workers", "1", conn_max_age="none", health_checks=health_checks
    )
    assert daemon.call("testapp.pause_then_query", seconds=2.5) >= 0
    assert daemon.call("rpc.status")["dead_connections_replaced"] >= 1


def test_transaction_idle_past_wait_timeout_fails_saying_why(database, start_daemon):
    """Inside atomic the lost connection cannot be replaced: -32001, and the message says why."""
    database.set_wait_timeout(1)
    daemon = start_daemon(database.url(), "--workers", "1", conn_max_age="none")
    with pytest.raises(DatabaseUnavailable) as caught:
        daemon.call("testapp.pause_in_atomic_then_query", seconds=2.5)
    assert "transaction cannot continue on a new connection" in caught.value.message
    assert daemon.call("testapp.count_notes") >= 0
