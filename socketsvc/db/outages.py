"""Riding out a database that cannot be reached: connects wait, bounded, on a shared backoff.

A restart of the database server, a failover or a pooler's restart makes
every connect fail for a second or two. A failed *connect* has sent no
statement, so connecting again later can never run anything twice: when
opening a connection fails with a "cannot reach the server" error, the work
(a request, a task, the daemon's own bookkeeping) waits and tries again, for
up to ``DB_UNAVAILABLE_WAIT`` seconds, before the error goes on (-32001 for a
request, as without waiting). A statement that fails on an open connection is
never retried: this is only about opening one.

While a database alias is down, the waiting is shared: one :class:`Outage`
per alias holds a capped exponential backoff (50 ms doubling to 1 s), and at
each step one waiting thread tries to connect while the others wait for its
outcome, so N waiting requests make one connect attempt per step, not N. The
start and the end of an outage are one log line each (the end with its
duration, how many requests waited and how many attempts it took), and
:func:`status` is what ``rpc.status`` and ``STATUS=`` say about it.

While an alias is down and nothing waits to connect to it, :func:`watch` (a
thread of the daemon's) tries it at each backoff step, at most every
:data:`WATCH_EVERY` seconds, so the status says it is back without waiting for
traffic. With ``DB_UNAVAILABLE_WAIT`` 0 nothing waits: each connect tries once,
and the outage is still recorded for the status.

The waiting is installed on a connection wrapper by :func:`make_patient`
(the request lifecycle does it for every alias of the thread): it wraps the
wrapper's ``ensure_connection``, the one place Django opens a connection.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from django.db.backends.base.base import BaseDatabaseWrapper

from socketsvc.conf import in_force
from socketsvc.db import vendors
from socketsvc.observe import events

log = structlog.get_logger(__name__)

FIRST_DELAY = 0.05
MAX_DELAY = 1.0
# How often :func:`watch` looks for an alias that is down with nothing trying it.
WATCH_EVERY = 2.0
_PATIENT = "_socketsvc_patient"

_outages: dict[str, Outage] = {}
_registry_lock = threading.Lock()
# The deadline of the connect this thread is making (see time_left).
_connecting = threading.local()


def wait_seconds() -> float:
    """Return how long a connect may wait for its database (``DB_UNAVAILABLE_WAIT``; 0: never)."""
    return max(0.0, float(in_force().DB_UNAVAILABLE_WAIT))


@contextmanager
def _connecting_until(deadline: float) -> Iterator[None]:
    """Let :func:`time_left` tell this thread's connect its *deadline*."""
    _connecting.deadline = deadline
    try:
        yield
    finally:
        _connecting.deadline = None


def time_left() -> float | None:
    """Return how long the connect this thread is making may still wait (None outside one).

    A connect that can itself wait (a pool's checkout) bounds its wait by this.
    """
    deadline: float | None = getattr(_connecting, "deadline", None)
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Outage:
    """One database alias's availability, and the backoff its waiting connects share."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._cond = threading.Condition()
        self.down = False
        self.since = 0.0
        self.since_wall: datetime | None = None
        self.error = ""
        self.last: BaseException | None = None
        self.delay = FIRST_DELAY
        self.next_attempt = 0.0
        self.attempting = False
        self.attempts = 0
        self.waiting = 0
        self.waited = 0
        # What the settings got wrong, from the last connect refused for it (none: nothing).
        self.problem = ""

    def began(self, exc: BaseException) -> None:
        """A connect failed: the alias is down (if it was not already)."""
        with self._cond:
            self.attempting = False
            self.last = exc
            if self.down:
                self._schedule()
                return
            self.down = True
            self.since = time.monotonic()
            self.since_wall = datetime.now(UTC)
            self.error = vendors.describe_code(exc) or type(exc).__name__
            self.delay = FIRST_DELAY / 2
            self.attempts = 1
            self.waited = 0
            self._schedule()
        events.db_down(self.alias)
        log.warning(
            "database_unavailable",
            alias=self.alias,
            error=self.error,
            detail=str(exc),
            wait_s=wait_seconds(),
            hint="requests wait for it (DB_UNAVAILABLE_WAIT), then get -32001",
        )

    def _schedule(self) -> None:
        self.delay = min(self.delay * 2, MAX_DELAY)
        self.next_attempt = time.monotonic() + self.delay
        self._cond.notify_all()

    def failed(self, exc: BaseException) -> None:
        """This thread's attempt failed: the next one waits a longer step."""
        with self._cond:
            self.attempts += 1
        self.began(exc)

    def misconfigured(self, exc: BaseException, problem: str) -> None:
        """A connect was refused for the settings: said once, and in the status until fixed."""
        with self._cond:
            self.attempting = False
            self._cond.notify_all()
            code = vendors.describe_code(exc) or type(exc).__name__
            if self.problem == f"{problem} ({code})":
                return
            self.problem = f"{problem} ({code})"
        log.error(
            "database_misconfigured",
            alias=self.alias,
            error=code,
            detail=str(exc),
            hint=f"{problem} in DATABASES['{self.alias}']; requests get -32001 at once "
            "until it is fixed (no restart needed)",
        )

    def ended(self) -> None:
        """A connect succeeded: the alias is up again."""
        with self._cond:
            self.attempting = False
            fixed, self.problem = self.problem, ""
            if not self.down:
                if fixed:
                    log.warning("database_settings_accepted", alias=self.alias)
                return
            self.down = False
            duration = time.monotonic() - self.since
            waited, attempts = self.waited, self.attempts
            self._cond.notify_all()
        began = self.since_wall.timestamp() if self.since_wall else time.time() - duration
        events.db_up(self.alias, duration, began)
        log.warning(
            "database_available_again",
            alias=self.alias,
            outage_s=round(duration, 3),
            requests_waited=waited,
            connect_attempts=attempts,
        )

    def take_turn(self, deadline: float) -> bool:
        """Wait until this thread may try to connect; False once *deadline* passed."""
        with self._cond:
            while True:
                now = time.monotonic()
                if not self.down:
                    return True
                if not self.attempting and now >= self.next_attempt:
                    self.attempting = True
                    return True
                if now >= deadline:
                    return False
                until = deadline if self.attempting else min(self.next_attempt, deadline)
                self._cond.wait(max(0.001, until - now))

    def claim_probe(self) -> bool:
        """Take the next connect attempt for a background probe: only while the alias is
        down (or refused the settings), nothing waits for it or tries it, and the
        backoff's next step has come."""
        with self._cond:
            if (
                not (self.down or self.problem)
                or self.waiting
                or self.attempting
                or time.monotonic() < self.next_attempt
            ):
                return False
            self.attempting = True
            return True

    def release(self) -> None:
        """A probe ended with an error that says nothing about reaching the server."""
        with self._cond:
            self.attempting = False
            self._cond.notify_all()

    def joined(self) -> None:
        """A unit of work starts waiting for this alias."""
        with self._cond:
            self.waiting += 1
            self.waited += 1

    def left(self) -> None:
        """A unit of work stops waiting (connected, or gave up)."""
        with self._cond:
            self.waiting -= 1

    def describe(self) -> dict[str, Any]:
        """Return this alias's part of ``rpc.status``."""
        with self._cond:
            if self.problem and not self.down:
                return {"available": False, "misconfigured": self.problem}
            if not self.down:
                return {"available": True}
            return {
                "available": False,
                "since": self.since_wall.isoformat() if self.since_wall else None,
                "for_s": round(time.monotonic() - self.since, 3),
                "error": self.error,
                "waiting": self.waiting,
                "connect_attempts": self.attempts,
            }


def outage(alias: str) -> Outage:
    """Return the shared state of *alias*."""
    found = _outages.get(alias)
    if found is None:
        with _registry_lock:
            found = _outages.setdefault(alias, Outage(alias))
    return found


def status() -> dict[str, dict[str, Any]]:
    """Return every alias this process connected to, available or not."""
    return {alias: state.describe() for alias, state in sorted(_outages.items())}


def unavailable() -> list[str]:
    """Return the aliases that are down, or refused the settings, now."""
    return [alias for alias, state in sorted(_outages.items()) if state.down or state.problem]


def _same_error(exc: BaseException | None) -> BaseException:
    """Return a fresh copy of the outage's last connect error, for a waiter that never tried."""
    if exc is None:  # pragma: no cover - an outage always has its error
        from django.db import OperationalError

        return OperationalError("the database is unavailable")
    copy = type(exc)(*exc.args)
    copy.__cause__ = exc.__cause__
    vendors.mark_connect_failure(copy)
    return copy


def make_patient(conn: BaseDatabaseWrapper) -> None:
    """Have *conn* wait out an unreachable server when it opens a connection (once per wrapper)."""
    if getattr(conn, _PATIENT, False):
        return
    original: Callable[[], None] = conn.ensure_connection

    def ensure_connection() -> None:
        if conn.connection is not None:
            original()
            return
        _connect_patiently(conn.alias, lambda: vendors.open_marked(original))

    conn.ensure_connection = ensure_connection  # type: ignore[method-assign]
    setattr(conn, _PATIENT, True)


def _attempt(state: Outage, connect: Callable[[], None]) -> BaseException | None:
    """Try to connect once; return the connection error, if that is what it was.

    Every outcome settles the outage's turn: a success ends the outage, a
    connection error schedules the next step, and anything else (the settings
    refused, a bug) gives the turn back before it is raised, so no later
    connect or probe waits for a turn nobody holds.
    """
    try:
        connect()
    except Exception as exc:
        if vendors.is_connection_error(exc):
            if state.down:
                state.failed(exc)
            else:
                state.began(exc)
            return exc
        problem = vendors.misconfiguration(exc)
        if problem is not None:
            state.misconfigured(exc, problem)
        else:
            state.release()
        raise
    state.ended()
    return None


def _connect_patiently(alias: str, connect: Callable[[], None]) -> None:
    deadline = time.monotonic() + wait_seconds()
    with _connecting_until(deadline):
        _connect_by(outage(alias), connect, deadline)


def _connect_by(state: Outage, connect: Callable[[], None], deadline: float) -> None:
    if wait_seconds() <= 0 or not state.down:
        last = _attempt(state, connect)
        if last is None:
            return
        if wait_seconds() <= 0:
            raise last
    else:
        last = None
    state.joined()
    try:
        while state.take_turn(deadline):
            failure = _attempt(state, connect)
            if failure is None:
                return
            last = failure
        raise last if last is not None else _same_error(state.last)
    finally:
        state.left()


def probe(alias: str, connect: Callable[[str], None]) -> None:
    """Try *alias* once with *connect* if it is down and nothing else is trying it."""
    state = outage(alias)
    if not state.claim_probe():
        return
    # A probe waits no longer than a request would (a pool's checkout included).
    with (
        _connecting_until(time.monotonic() + max(wait_seconds(), MAX_DELAY)),
        contextlib.suppress(Exception),
    ):
        _attempt(state, lambda: connect(alias))


def watch(stop: threading.Event, connect: Callable[[str], None]) -> None:
    """Until *stop*, probe every alias that is down (see the module docstring)."""
    while not stop.wait(WATCH_EVERY):
        for alias in unavailable():
            probe(alias, connect)
