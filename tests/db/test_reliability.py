"""Faults under load (a short slice of the long run), and no resource growth afterwards."""

from __future__ import annotations

from socketsvc.protocol import DATABASE_UNAVAILABLE, HANDLER_ERROR
from tests.harness.reliability import RSS_BOUND_KIB, run_load, sigkill_and_restart


def test_every_request_is_answered_once_through_db_kill_restart_and_crashes(
    private_mariadb, start_daemon, daemons
):
    """8 clients pipelining through a KILL, a MariaDB restart and crashing handlers lose nothing."""
    daemon = start_daemon(private_mariadb.url(), conn_max_age="60")
    report = run_load(daemon, private_mariadb, duration=8.0)

    # Both faults were injected, and the daemon met them.
    assert report.sessions_killed >= 1, report.faults
    assert report.restart is not None, report.faults
    events = {e.get("event") for e in daemon.log_events()}
    assert {"database_unavailable", "database_available_again"} <= events
    assert daemon.call("rpc.status")["dead_connections_replaced"] >= 1
    assert report.sent > 500
    assert report.lost == 0
    assert report.duplicated == 0
    assert report.mismatched == 0
    assert report.unexpected_errors == 0
    assert report.ok + report.errors[HANDLER_ERROR] + report.errors[DATABASE_UNAVAILABLE] == (
        report.sent
    )
    assert report.errors[HANDLER_ERROR] > 0  # the injected crashes were answered, not lost

    before, after = report.before, report.after
    assert after.fds <= before.fds
    assert after.threads <= before.threads
    assert after.db_sessions <= 4
    assert after.rss_kib - before.rss_kib <= RSS_BOUND_KIB

    successor, ok = sigkill_and_restart(
        daemon, {"DATABASE_URL": private_mariadb.url(), "TEST_CONN_MAX_AGE": "60"}
    )
    daemons.append(successor)
    assert ok
