"""What a client learns of a failure: the error's type and code, never the database's own text."""

from __future__ import annotations

import json

import pytest

from socketsvc import DatabaseUnavailable, HandlerError, RemoteError
from tests.harness.waiting import poll

pytestmark = pytest.mark.mariadb


def logged_request(daemon, request_id: int) -> dict:
    """Return the canonical log line of *request_id*."""
    return poll(
        lambda: next(
            (
                event
                for event in daemon.log_events()
                if event.get("event") == "request" and event.get("request_id") == request_id
            ),
            None,
        )
    )


# The code each server gives the query of a table that does not exist.
MISSING_TABLE = {"mysql": 1146, "postgresql": "42P01"}


def test_sql_error_reaches_the_client_without_sql_and_the_log_with_it(database, start_daemon):
    """A failing query: the client gets the type, the driver's code and the request id, never
    the SQL (PostgreSQL's message quotes it: LINE 1: SELECT ...); the log has it all."""
    daemon = start_daemon(database.url())
    with pytest.raises(HandlerError) as caught:
        daemon.call("testapp.bad_sql")
    error = caught.value
    shown = json.dumps({"message": error.message, "data": error.data})
    for secret in (
        "socketsvc_missing_table",
        "hunter2",
        "SELECT",
        "LINE 1",
        "socketsvc_test",
        "root",
        "postgres",
    ):
        assert secret not in shown
    assert error.error_type == "django.db.utils.ProgrammingError"
    code = MISSING_TABLE[database.vendor]
    assert error.data["db_code"] == code
    assert f"{database.code_label} {code}" in error.message
    line = logged_request(daemon, error.data["request_id"])
    assert "socketsvc_missing_table" in line["error"]
    assert line["exception"][0]["exc_type"] == "ProgrammingError"


def test_unreachable_database_names_no_host_or_socket_to_the_client(private_database, start_daemon):
    """With the server down the client gets -32001 and the driver code, not the socket path."""
    daemon = start_daemon(private_database.url())
    private_database.stop()
    with pytest.raises(DatabaseUnavailable) as caught:
        daemon.call("testapp.count_notes")
    error = caught.value
    shown = json.dumps({"message": error.message, "data": error.data})
    assert private_database.socket not in shown
    assert "Can't connect" not in shown and "connection failed" not in shown
    assert error.data["db_code"] == private_database.refused_code
    line = logged_request(daemon, error.data["request_id"])
    assert private_database.socket in line["error"]


def test_a_handlers_own_rpc_error_passes_through_as_written(sqlite_daemon):
    """RPCError raised by a handler is the handler's choice: code, message and data unchanged."""
    with pytest.raises(RemoteError) as caught:
        sqlite_daemon.call("shop.sell", sku="NOPE")
    assert caught.value.code == 1001
    assert caught.value.data == {"sku": "NOPE"}
