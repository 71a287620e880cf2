"""The client keeps one connection per thread and socket, and resends only what was never read."""

from __future__ import annotations

import os
import threading

import pytest

from socketsvc import call
from socketsvc.client import close_connections
from tests.daemon import Daemon, socketsvc_settings
from tests.waiting import poll


def accepted(daemon: Daemon) -> int:
    return daemon.call("rpc.status")["connections_accepted"]


def test_calls_from_one_thread_share_one_connection(sqlite_daemon):
    """Consecutive calls from a thread reuse its connection; another thread gets its own."""
    close_connections()
    before = accepted(sqlite_daemon)
    for n in range(5):
        assert call("testapp.add", n, 1, socket=sqlite_daemon.socket) == n + 1
    assert accepted(sqlite_daemon) == before  # the status call's connection served them all

    results = []
    other = threading.Thread(
        target=lambda: results.append(call("testapp.add", 1, 1, socket=sqlite_daemon.socket))
    )
    other.start()
    other.join(30)
    assert results == [2]
    assert accepted(sqlite_daemon) == before + 1


def test_kept_connection_closed_by_the_service_is_replaced(short_tmp, sqlite_url, daemons):
    """After the service closes an idle kept connection, the next call reconnects and succeeds."""
    settings = socketsvc_settings(short_tmp / "idle.json", IDLE_TIMEOUT=0.3)
    daemon = Daemon(str(short_tmp / "c.sock"), {"DATABASE_URL": sqlite_url, **settings})
    daemons.append(daemon)
    daemon.start()
    assert call("testapp.add", 1, 2, socket=daemon.socket) == 3
    poll(lambda: "idle_connection_closed" in daemon.log())
    assert call("testapp.add", 2, 2, socket=daemon.socket) == 4


def test_kept_connection_survives_a_daemon_restart(short_tmp, sqlite_url, daemons):
    """A call after the daemon was restarted on the same path succeeds on a new connection."""
    path = str(short_tmp / "r.sock")
    first = Daemon(path, {"DATABASE_URL": sqlite_url})
    daemons.append(first)
    first.start()
    assert call("testapp.add", 1, 1, socket=path) == 2
    assert first.stop() == 0
    second = Daemon(path, {"DATABASE_URL": sqlite_url})
    daemons.append(second)
    second.start()
    assert call("testapp.add", 3, 1, socket=path) == 4


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_use_the_parents_connection(sqlite_daemon):
    """After fork, the child opens its own connection; parent and child both get their replies."""
    assert call("testapp.add", 0, 1, socket=sqlite_daemon.socket) == 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            answer = call("testapp.add", 40, 2, socket=sqlite_daemon.socket, timeout=10)
            os.write(write_end, str(answer).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child_answer = os.read(read_end, 100).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_answer == "42"
    assert call("testapp.add", 5, 5, socket=sqlite_daemon.socket) == 10
