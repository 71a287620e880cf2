"""``async def`` handlers get the same database lifecycle as plain ones.

Their async ORM calls run in the worker thread (``sync_to_async``, thread
sensitive), on the connections the lifecycle checks before the call and closes
after it: a session killed between calls, or dropped by ``wait_timeout`` while
the handler awaits, is replaced without an error reaching the client.
"""

from __future__ import annotations


def test_an_async_handler_gets_a_new_session_after_its_own_was_killed(database, start_daemon):
    daemon = start_daemon(database.url(), "--workers", "1", conn_max_age="none")
    before = daemon.call("testapp.async_connection_id")
    assert database.kill_sessions() == [before]
    after = daemon.call("testapp.async_connection_id")
    assert after != before
    assert daemon.call("testapp.async_count_notes") == 0
    assert daemon.call("rpc.status")["errors"] == 0


def test_an_async_handler_called_after_wait_timeout_succeeds(private_database, start_daemon):
    """wait_timeout=1: the session the last call left idles past it; the next call (and one
    that awaits past it before its query) still succeed."""
    private_database.set_wait_timeout(1)
    daemon = start_daemon(private_database.url(), "--workers", "1", conn_max_age="none")
    first = daemon.call("testapp.async_connection_id")
    assert daemon.call("testapp.async_pause_then_query", seconds=2.5) == 0
    assert daemon.call("testapp.async_connection_id") != first
    assert daemon.call("rpc.status")["errors"] == 0
