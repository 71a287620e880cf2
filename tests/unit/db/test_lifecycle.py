"""socketsvc.db.lifecycle used on its own, in this process (SQLite): scope, decorator, outer atomic."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from socketsvc.db import lifecycle
from socketsvc.db.lifecycle import request_scope
from socketsvc.db.vendors import ops_for
from tests.testapp.models import Note


@pytest.mark.django_db
def test_request_scope_leaves_an_outer_transaction_alone():
    """Inside a caller's atomic block (here, the test's), the scope neither closes nor commits it."""
    assert connection.in_atomic_block
    with request_scope():
        Note.objects.create(text="inside-outer")
    assert connection.in_atomic_block
    assert connection.connection is not None
    assert Note.objects.filter(text="inside-outer").count() == 1


@pytest.mark.django_db
def test_request_scope_rolls_back_only_the_blocks_it_saw_opened():
    """A block leaked inside the scope is rolled back to its savepoint; the outer one survives."""
    depth = len(connection.atomic_blocks)
    Note.objects.create(text="outer-row")
    with request_scope():
        transaction.atomic().__enter__()
        Note.objects.create(text="leaked-row")
    assert len(connection.atomic_blocks) == depth
    assert Note.objects.filter(text="outer-row").count() == 1
    assert Note.objects.filter(text="leaked-row").count() == 0


@pytest.mark.django_db(transaction=True)
def test_request_scope_as_decorator_restores_autocommit():
    """Used as a decorator, the scope rolls back work left uncommitted with autocommit off."""

    @request_scope()
    def job() -> None:
        transaction.set_autocommit(False)
        Note.objects.create(text="never-committed")

    job()
    job()
    assert connection.get_autocommit()
    assert Note.objects.filter(text="never-committed").count() == 0


@pytest.mark.django_db(transaction=True)
def test_request_scope_reraises_the_work_exception():
    """The scope cleans up and lets the work's own exception through unchanged."""
    with pytest.raises(KeyError), request_scope():
        Note.objects.create(text="before-error")
        raise KeyError("work failed")
    assert Note.objects.filter(text="before-error").count() == 1


@pytest.mark.django_db(transaction=True)
def test_close_thread_connections_closes_what_a_thread_opened():
    """A worker thread's connection is closed by close_thread_connections() at its exit."""
    seen: dict[str, object] = {}

    def worker() -> None:
        try:
            Note.objects.count()
            seen["open_before"] = connection.connection is not None
        finally:
            lifecycle.close_thread_connections()
            seen["open_after"] = connection.connection is not None

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert seen == {"open_before": True, "open_after": False}


def mysql_wrapper(server):
    """A Django MySQL connection wrapper to the throwaway server, outside DATABASES."""
    from django.db.utils import ConnectionHandler

    settings = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "socketsvc_test",
        "USER": "root",
        "HOST": server.socket,
        "CONN_MAX_AGE": None,
    }
    return ConnectionHandler({"default": settings})["default"]


def test_closed_connection_is_seen_without_a_round_trip(mariadb, django_db_blocker):
    """An idle MySQL connection reads as open; once KILLed, as closed, with no query sent."""
    conn = mysql_wrapper(mariadb)
    with django_db_blocker.unblock():
        with conn.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            (session,) = cursor.fetchone()
        assert ops_for("mysql").closed_by_server(conn) is False
        mariadb.query(f"KILL {session}")
        assert ops_for("mysql").closed_by_server(conn) is True
        conn.close()
