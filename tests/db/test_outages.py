"""Riding out an unreachable database: requests wait (bounded) for it, on a shared backoff.

Real daemons, a throwaway MariaDB or PostgreSQL stopped and started under them, and a TCP
listener that stands in for a server refusing every connection at the
handshake, counting the connect attempts from the server's side.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from socketsvc.client import RemoteError, call_with, close_connections
from socketsvc.protocol import DATABASE_UNAVAILABLE
from tests.harness.waiting import poll


def _count_notes(socket_path: str) -> tuple[object, float]:
    """Call a handler that needs the database; return (result or error code, seconds)."""
    started = time.monotonic()
    try:
        return call_with("testapp.count_notes", {}, socket=socket_path, timeout=30), (
            time.monotonic() - started
        )
    except RemoteError as exc:
        return exc.code, time.monotonic() - started
    finally:
        close_connections()


def test_a_request_waits_for_a_restarting_database_and_succeeds(private_database, start_daemon):
    """The server down while a request arrives: the request waits, rpc.status says the alias is
    unavailable (since when, who waits), and once the server is back the request succeeds; the
    outage is one log line at its start and one at its end."""
    daemon = start_daemon(private_database.url(), conn_max_age="60")
    assert daemon.call("testapp.count_notes") == 0
    private_database.stop()
    outcome: list[tuple[object, float]] = []
    caller = threading.Thread(target=lambda: outcome.append(_count_notes(daemon.socket)))
    caller.start()
    try:
        down = poll(
            lambda: (
                (d := daemon.call("rpc.status")["databases"]["default"])["available"] is False
                and d["waiting"] >= 1
                and d
            )
        )
        assert down["since"] is not None
        assert down["error"].startswith(private_database.code_label)
    finally:
        private_database.start()
        caller.join(30)
    assert outcome and outcome[0][0] == 0, outcome
    assert daemon.call("rpc.status")["databases"]["default"] == {"available": True}
    events = [e for e in daemon.log_events() if e["event"].startswith("database_")]
    assert [e["event"] for e in events if e["event"] != "database_reachable"] == [
        "database_unavailable",
        "database_available_again",
    ]
    assert events[-1]["requests_waited"] >= 1


def test_without_the_wait_a_request_fails_at_once(private_database, start_daemon, short_tmp):
    """DB_UNAVAILABLE_WAIT=0: with the server down a request gets -32001 without waiting."""
    daemon = start_daemon(private_database.url(), conn_max_age="60", DB_UNAVAILABLE_WAIT=0)
    private_database.stop()
    try:
        code, seconds = _count_notes(daemon.socket)
    finally:
        private_database.start()
    assert code == DATABASE_UNAVAILABLE
    assert seconds < 2.5  # the default wait is 5 s


class Refuser:
    """A TCP listener that accepts each connection and closes it at once, counting them:
    a database server that refuses everyone at the handshake, seen from its side."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def refuser():
    server = Refuser()
    yield server
    server.close()


def test_an_outage_longer_than_the_wait_costs_one_connect_per_backoff_step(
    refuser, start_daemon, short_tmp
):
    """Eight requests at once to a database that refuses every connection: each gets -32001
    after about DB_UNAVAILABLE_WAIT (2 s), the daemon stays up, and the server sees a connect
    attempt per backoff step, not one per request per step."""
    url = f"mysql://root@127.0.0.1:{refuser.port}/socketsvc_test"
    daemon = start_daemon(url, ready=False, DB_UNAVAILABLE_WAIT=2)
    poll(
        lambda: daemon.call("rpc.status")["databases"].get("default", {}).get("available") is False
    )
    before = refuser.accepted
    barrier = threading.Barrier(8)
    outcomes: list[tuple[object, float]] = []

    def one() -> None:
        barrier.wait()
        outcomes.append(_count_notes(daemon.socket))

    callers = [threading.Thread(target=one) for _ in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    attempts = refuser.accepted - before
    assert [code for code, _ in outcomes] == [DATABASE_UNAVAILABLE] * 8
    assert all(1.5 <= seconds <= 5.0 for _, seconds in outcomes), outcomes
    # 50 ms doubling to 1 s within 2 s: 5 steps; the readiness probe may add two of its own.
    # Each request trying on its own would have made about 40.
    assert attempts <= 10, attempts
    assert daemon.call("rpc.ping") == "pong"
    assert daemon.process.poll() is None


def _status_until(notify_socket, wanted, timeout: float = 15.0) -> str:
    """Return the first STATUS= text for which *wanted* holds (bounded)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        fields = notify_socket.receive(deadline - time.monotonic())
        for field in fields or ():
            if field.startswith("STATUS="):
                seen.append(field)
                if wanted(field):
                    return field
    raise AssertionError(f"no such STATUS= within {timeout} s; saw {seen[-3:]}")


def test_with_worker_processes_the_masters_status_says_the_database_is_down(
    private_mariadb, start_daemon, notify_socket, short_tmp
):
    """--processes 2: a worker that finds the database unreachable tells the master, whose
    STATUS= (what systemctl status shows) names the alias until the database is back."""
    daemon = start_daemon(
        private_mariadb.url(),
        "--processes",
        "2",
        conn_max_age="60",
        env={"NOTIFY_SOCKET": notify_socket.path},
        DB_UNAVAILABLE_WAIT=0.5,
    )
    notify_socket.wait_for("READY=1")
    private_mariadb.stop()
    try:
        assert _count_notes(daemon.socket)[0] == DATABASE_UNAVAILABLE
        _status_until(notify_socket, lambda status: "database default unavailable" in status)
    finally:
        private_mariadb.start()
    # No call is made: each process probes the database it found down by itself.
    _status_until(notify_socket, lambda status: "unavailable" not in status, timeout=20)
    assert _count_notes(daemon.socket)[0] == 0


def test_with_no_traffic_the_status_says_when_the_database_is_back(
    private_database, start_daemon, short_tmp
):
    """A request finds the server down (DB_UNAVAILABLE_WAIT=0: -32001 at once) and no other
    comes: rpc.status says the alias is unavailable, then available once the server is back,
    with the outage's end logged, and nothing held open on the server afterwards."""
    daemon = start_daemon(private_database.url(), DB_UNAVAILABLE_WAIT=0)
    private_database.stop()
    try:
        assert _count_notes(daemon.socket)[0] == DATABASE_UNAVAILABLE
        assert daemon.call("rpc.status")["databases"]["default"]["available"] is False
    finally:
        private_database.start()
    poll(lambda: daemon.call("rpc.status")["databases"]["default"] == {"available": True})
    ended = [e for e in daemon.log_events() if e["event"] == "database_available_again"]
    assert len(ended) == 1
    assert ended[0]["requests_waited"] == 0
    poll(lambda: private_database.sessions() == [])


def test_started_with_the_database_down_status_log_and_client_name_one_code(
    private_database, start_daemon, short_tmp
):
    """A daemon started while the server is down: rpc.status, the outage's log line and the
    client's error all name the refused connect (MySQL 2002, SQLSTATE 08001), none a lost
    connection."""
    private_database.stop()
    try:
        daemon = start_daemon(private_database.url(), ready=False, DB_UNAVAILABLE_WAIT=0)
        refused = f"{private_database.code_label} {private_database.refused_code}"
        databases = poll(lambda: daemon.call("rpc.status")["databases"])
        assert databases["default"]["error"] == refused
        began = [e for e in daemon.log_events() if e["event"] == "database_unavailable"]
        assert [e["error"] for e in began] == [refused]
        with pytest.raises(RemoteError) as caught:
            daemon.call("testapp.count_notes")
        assert caught.value.data["db_code"] == private_database.refused_code
    finally:
        private_database.start()


def _call_code(socket_path: str, method: str = "testapp.count_notes") -> tuple[object, str]:
    """Call *method*; return (its result, "") or (the error code, the error message)."""
    try:
        return call_with(method, {}, socket=socket_path, timeout=30), ""
    except RemoteError as exc:
        return exc.code, exc.message
    finally:
        close_connections()


def test_a_login_refused_during_an_outage_wedges_nothing(private_database, start_daemon, short_tmp):
    """The server comes back from an outage refusing the daemon's login (a locked account, a
    role that may not log in): that request fails at once, saying what to fix; once the login
    is allowed again the daemon serves, with no restart (the outage's turn was given back)."""
    server = private_database
    server.add_login("app", "secret")
    daemon = start_daemon(server.url(user="app", password="secret"), DB_UNAVAILABLE_WAIT=2)
    assert _call_code(daemon.socket) == (0, "")
    server.allow_login("app", False)
    server.stop()
    try:
        assert _call_code(daemon.socket)[0] == DATABASE_UNAVAILABLE  # the outage begins
    finally:
        server.start()
    code, message = _call_code(daemon.socket)
    assert code == DATABASE_UNAVAILABLE
    assert f"{server.code_label} {server.locked_code}" in message
    assert "USER" in message
    server.allow_login("app", True)
    poll(lambda: _call_code(daemon.socket) == (0, ""), timeout=15, why=daemon.log)
    poll(lambda: daemon.call("rpc.status")["databases"]["default"] == {"available": True})


@pytest.mark.parametrize("private_database", ["mariadb", "postgresql"], indirect=True)
def test_an_unknown_database_fails_at_once_saying_what_to_fix(private_database, start_daemon):
    """DATABASES names a database the server does not have: a request gets -32001 at once
    (not after DB_UNAVAILABLE_WAIT), naming the code and the setting to fix; the log says so."""
    server = private_database
    daemon = start_daemon(server.url(db="no_such_db"), ready=False)
    started = time.monotonic()
    code, message = _call_code(daemon.socket)
    assert code == DATABASE_UNAVAILABLE
    assert time.monotonic() - started < 2.5  # DB_UNAVAILABLE_WAIT is 5 s
    assert f"{server.code_label} {server.unknown_database_code}" in message
    assert "NAME" in message
    assert "no_such_db" not in message  # the client learns no names
    logged = poll(
        lambda: [e for e in daemon.log_events() if e.get("event") == "database_misconfigured"]
    )
    assert "DATABASES['default']" in logged[0]["hint"]


@pytest.mark.parametrize("private_database", ["mariadb", "postgresql"], indirect=True)
def test_a_login_over_its_connection_cap_waits_for_a_free_connection(
    private_database, start_daemon
):
    """The login's connections are all taken (MySQL 1226, PostgreSQL 53300, as in a reconnect
    rush): a request waits for one to come free, like any outage, and then succeeds."""
    server = private_database
    server.add_login("app", "secret", max_connections=2)
    daemon = start_daemon(server.url(user="app", password="secret"))
    held = [server.connect_as("app", "secret") for _ in range(2)]
    outcome: list[tuple[object, str]] = []
    caller = threading.Thread(target=lambda: outcome.append(_call_code(daemon.socket)))
    caller.start()
    try:
        poll(lambda: daemon.call("rpc.status")["databases"]["default"]["available"] is False)
        held.pop().close()
        caller.join(30)
    finally:
        for conn in held:
            conn.close()
    assert outcome == [(0, "")]
