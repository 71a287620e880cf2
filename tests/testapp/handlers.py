"""Handlers that misbehave on purpose, for the daemon tests."""

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection, transaction

from socketsvc import handler

from .gates import wait_at
from .models import Note

log = structlog.get_logger("testapp")


# The little SQL that differs between the servers the fault tests run on.
_SQL = {
    "mysql": {
        "session_id": "SELECT CONNECTION_ID()",
        "sleep": "SELECT SLEEP(%s)",
        "kill_self": "KILL CONNECTION_ID()",
    },
    "postgresql": {
        "session_id": "SELECT pg_backend_pid()",
        "sleep": "SELECT 0 FROM pg_sleep(%s)",
        "kill_self": "SELECT pg_terminate_backend(pg_backend_pid())",
    },
}


@handler
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the params as received."""
    return {"args": list(args), "kwargs": kwargs}


@handler
def add(a: int, b: int = 0) -> int:
    """Add two integers."""
    return a + b


@handler
def sleep(seconds: float) -> float:
    """Sleep, touching no database."""
    time.sleep(seconds)
    return seconds


@handler
def hold(gate: str, timeout: float = 60.0) -> str:
    """Wait at the test's gate (tests/harness/gate.py) until the test opens it."""
    wait_at(gate, timeout)
    return "released"


@handler
def query_then_hold(gate: str) -> int:
    """Query (so this worker holds a connection), then wait at the test's gate."""
    count = Note.objects.count()
    hold(gate)
    return count


@handler
def fail(message: str = "boom") -> None:
    """Raise a RuntimeError."""
    raise RuntimeError(message)


@handler
def deep_result(depth: int) -> list[Any]:
    """Return a list nested *depth* deep (too deep to encode past about 1,000)."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@handler
def not_json() -> object:
    """Return something JSON cannot carry."""
    return object()


@handler
def connection_id() -> int:
    """Return the server-side id of this worker's DB session."""
    with connection.cursor() as cursor:
        cursor.execute(_SQL[connection.vendor]["session_id"])
        return int(cursor.fetchone()[0])


@handler
def state() -> dict[str, Any]:
    """Report the connection's transaction state, then prove it can query."""
    before = {"in_atomic_block": connection.in_atomic_block, "autocommit": connection.autocommit}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # libpq tracks both: the server told it with its last reply.
            autocommit = connection.connection.autocommit
            in_transaction = connection.connection.info.transaction_status != 0
        else:
            cursor.execute("SELECT @@autocommit, @@in_transaction")
            autocommit, in_transaction = cursor.fetchone()
    return {
        **before,
        "server_autocommit": int(autocommit),
        "server_in_transaction": int(in_transaction),
        "notes": Note.objects.count(),
    }


@handler
def write_note(text: str) -> int:
    """Insert a note; return how many notes exist."""
    Note.objects.create(text=text)
    return Note.objects.count()


@handler
def count_notes(text: str | None = None) -> int:
    """Count notes (with this text)."""
    notes = Note.objects.all()
    return notes.filter(text=text).count() if text is not None else notes.count()


@handler
def raise_in_atomic(text: str) -> None:
    """Write inside atomic, then raise: the write must roll back."""
    with transaction.atomic():
        Note.objects.create(text=text)
        raise ValueError("failed inside atomic")


@handler
def slow_atomic(text: str, seconds: float, fail: bool = False) -> str:
    """Write inside atomic, then run a statement that takes *seconds* (then raise if *fail*)."""
    sleep = "SELECT pg_sleep(%s)" if connection.vendor == "postgresql" else "SELECT SLEEP(%s)"
    with transaction.atomic():
        Note.objects.create(text=text)
        with connection.cursor() as cursor:
            cursor.execute(sleep, [seconds])
        if fail:
            raise ValueError("failed after a slow statement")
    return "committed"


@handler
def leave_atomic_open(text: str) -> str:
    """Enter an atomic block and never leave it."""
    transaction.atomic().__enter__()
    Note.objects.create(text=text)
    return "left open"


@handler
def autocommit_off(text: str) -> str:
    """Switch autocommit off, write, and return without committing."""
    transaction.set_autocommit(False)
    Note.objects.create(text=text)
    return "autocommit left off"


@handler
def break_driver_connection() -> str:
    """Close the raw driver connection behind Django's back."""
    connection.ensure_connection()
    connection.connection.close()
    return "closed"


@handler
def db_sleep(seconds: float) -> int:
    """Sleep on the database server: SELECT SLEEP() or pg_sleep()."""
    with connection.cursor() as cursor:
        cursor.execute(_SQL[connection.vendor]["sleep"], [seconds])
        return int(cursor.fetchone()[0])


@handler
def bad_sql() -> None:
    """Run SQL that fails, naming a table and a value (neither may reach the client)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM socketsvc_missing_table WHERE secret = 'hunter2'")


@handler
def pause_then_query(seconds: float) -> int:
    """Query, compute (sleep) for a while, then query again (a long handler)."""
    Note.objects.count()
    time.sleep(seconds)
    return Note.objects.count()


@handler
def pause_in_atomic_then_query(seconds: float) -> int:
    """Inside one transaction: query, pause, query again."""
    with transaction.atomic():
        Note.objects.count()
        time.sleep(seconds)
        return Note.objects.count()


@handler("custom.named")
def explicitly_named() -> str:
    """Answer under an explicit name."""
    return "named"


@handler
def leave_atomic_open_on_dead_connection(text: str) -> str:
    """Enter an atomic block, write, have the server kill the session, and return."""
    transaction.atomic().__enter__()
    Note.objects.create(text=text)
    with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
        cursor.execute(_SQL[connection.vendor]["kill_self"])
    return "left open on a dead connection"


@handler
def log_steps(tag: str, steps: int = 3, pause: float = 0.01) -> str:
    """Log a few lines of its own, pausing between them, then return the tag."""
    for step in range(steps):
        log.info("handler_step", tag=tag, step=step)
        time.sleep(pause)
    return tag


@handler
def stdlib_log(message: str) -> str:
    """Log through a plain stdlib logger, as Django and most libraries do."""
    logging.getLogger("django.testapp").warning(message)
    return message


@handler
def fork_and_query() -> dict[str, int]:
    """Query, fork a child that queries too, query again: whose sessions were used?

    The child exits with 0 if its query ran on a session of its own, 1 if it
    ran on its parent's (an inherited connection), 2 if it failed.
    """
    parent_session = connection_id()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 2
        try:
            code = 0 if connection_id() != parent_session else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    return {
        "before": parent_session,
        "child_exit": os.waitstatus_to_exitcode(status),
        "after": connection_id(),
    }


@handler
def campaign_call(token: str) -> str:
    """Record that this call ran (a fault campaign counts them per token), return the token."""
    from .models import CampaignCall

    CampaignCall.objects.create(token=token, pid=os.getpid())
    log.info("campaign_call", token=token)  # with the request's id and connection
    return token


@handler
async def async_connection_id() -> int:
    """An async handler: the server-side id of the DB session its ORM calls use."""

    def session() -> int:
        with connection.cursor() as cursor:
            cursor.execute(_SQL[connection.vendor]["session_id"])
            return int(cursor.fetchone()[0])

    return await sync_to_async(session)()


@handler
async def async_count_notes() -> int:
    """An async handler using the async ORM."""
    return await Note.objects.acount()


@handler
async def async_pause_then_query(seconds: float) -> int:
    """Await a pause (the session idles meanwhile), then query through the async ORM."""
    await asyncio.sleep(seconds)
    return await Note.objects.acount()


@handler
def enqueue_adds(count: int) -> list[str]:
    """Enqueue *count* add(1, 2) tasks from inside the daemon; their ids."""
    from tests.testapp.tasks import add as add_task

    return [add_task.enqueue(1, 2).id for _ in range(count)]


@handler
def spans() -> list[dict[str, Any]]:
    """The spans this daemon process finished (with ``TEST_OTEL=1``)."""
    from tests.testapp import otel

    return otel.finished()
