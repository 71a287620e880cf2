"""Handlers that leave transactions in a mess: the next request gets a clean connection."""

from __future__ import annotations

import pytest

from socketsvc import HandlerError

CLEAN = {
    "in_atomic_block": False,
    "autocommit": True,
    "server_autocommit": 1,
    "server_in_transaction": 0,
}


def clean_state(state: dict) -> dict:
    return {key: state[key] for key in CLEAN}


@pytest.fixture
def daemon(database, start_daemon):
    # One worker, persistent connections: the next request reuses the very
    # thread and connection the misbehaving handler used.
    return start_daemon(database.url(), "--workers", "1", conn_max_age="none")


def test_exception_inside_atomic_rolls_back_and_next_request_is_clean(daemon):
    """A handler raising inside atomic gets -32000; its write is rolled back; the next request is clean."""
    with pytest.raises(HandlerError) as caught:
        daemon.call("testapp.raise_in_atomic", text="raised-in-atomic")
    assert caught.value.error_type == "ValueError"
    assert caught.value.data["type"] == "ValueError"
    assert caught.value.data["message"] == "failed inside atomic"
    assert clean_state(daemon.call("testapp.state")) == CLEAN
    assert daemon.call("testapp.count_notes", text="raised-in-atomic") == 0


def test_a_transaction_whose_last_statement_outlasts_the_idle_check_commits(daemon):
    """A transaction ends with a statement longer than DB_CHECK_AFTER_IDLE (1 s): it commits,
    the handler's answer is its own (no error about autocommit after the commit), and the
    connection is clean for the next request."""
    assert daemon.call("testapp.slow_atomic", text="slow-commit", seconds=1.5) == "committed"
    assert daemon.call("testapp.count_notes", text="slow-commit") == 1
    assert clean_state(daemon.call("testapp.state")) == CLEAN


def test_a_transaction_that_fails_after_a_long_statement_rolls_back_with_its_own_error(daemon):
    """The same, raising after the long statement: rolled back, the handler's own ValueError."""
    with pytest.raises(HandlerError) as caught:
        daemon.call("testapp.slow_atomic", text="slow-rollback", seconds=1.5, fail=True)
    assert caught.value.error_type == "ValueError"
    assert daemon.call("testapp.count_notes", text="slow-rollback") == 0
    assert clean_state(daemon.call("testapp.state")) == CLEAN


def test_atomic_block_left_open_is_rolled_back(daemon):
    """A handler that never leaves its atomic block has its write rolled back; later requests work."""
    assert daemon.call("testapp.leave_atomic_open", text="leaked-atomic") == "left open"
    assert clean_state(daemon.call("testapp.state")) == CLEAN
    assert daemon.call("testapp.count_notes", text="leaked-atomic") == 0
    assert daemon.call("testapp.write_note", text="after-leak") >= 1
    assert daemon.call("testapp.count_notes", text="after-leak") == 1
    assert daemon.call("rpc.status")["leaked_atomic_rolled_back"] == 1


def test_autocommit_left_off_is_rolled_back_and_restored(daemon):
    """A handler that turns autocommit off and returns leaves no open transaction behind."""
    session = daemon.call("testapp.connection_id")
    assert daemon.call("testapp.autocommit_off", text="uncommitted") == "autocommit left off"
    assert clean_state(daemon.call("testapp.state")) == CLEAN
    assert daemon.call("testapp.count_notes", text="uncommitted") == 0
    # Rolled back and restored in place: the session itself was kept.
    assert daemon.call("testapp.connection_id") == session
    assert daemon.call("rpc.status")["autocommit_restored"] == 1


def test_leaked_atomic_on_a_dead_connection_is_discarded(daemon):
    """A leaked atomic block whose connection died is thrown away, not reused forever."""
    daemon.call("testapp.leave_atomic_open_on_dead_connection", text="leaked-then-killed")
    for _ in range(3):
        assert clean_state(daemon.call("testapp.state")) == CLEAN
    assert daemon.call("testapp.count_notes", text="leaked-then-killed") == 0
