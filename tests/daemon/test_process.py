"""The daemon as a process: socket binding rules, drain on SIGTERM/SIGINT, one instance per path."""

from __future__ import annotations

import os
import signal
import socket
import stat

import pytest

from tests.harness.daemon import Daemon, RawClient
from tests.harness.waiting import poll


def run_daemon(sock_path: str, sqlite_url: str, *args: str, **env: str) -> tuple[int, str]:
    """Run a daemon to its exit (for start-up failures); return (returncode, output)."""
    return Daemon(sock_path, {"DATABASE_URL": sqlite_url, **env}, *args).run_to_exit()


def hold(client: RawClient, gate, request_id) -> None:
    client.request(
        {"jsonrpc": "2.0", "method": "testapp.hold", "params": [gate.path], "id": request_id}
    )


def test_sigterm_with_request_in_flight_delivers_reply_and_exits_0(sqlite_daemon, gate):
    """SIGTERM during a request: the reply still arrives, the exit status is 0, the socket is gone."""
    with RawClient(sqlite_daemon.socket) as client:
        hold(client, gate, 1)
        gate.wait_for(1)
        sqlite_daemon.signal(signal.SIGTERM)
        poll(lambda: not os.path.exists(sqlite_daemon.socket))  # draining
        gate.open()
        assert client.reply() == {"jsonrpc": "2.0", "id": 1, "result": "released"}
        assert client.closed_by_server()
    assert sqlite_daemon.process.wait(30) == 0
    assert not os.path.exists(sqlite_daemon.socket)


def test_draining_daemon_refuses_new_connections_but_serves_open_ones(sqlite_daemon, gate):
    """Once draining, new connections are refused; requests on open ones are still served."""
    with RawClient(sqlite_daemon.socket) as client, RawClient(sqlite_daemon.socket) as other:
        hold(client, gate, 1)
        gate.wait_for(1)
        sqlite_daemon.signal(signal.SIGTERM)
        # The listener is closed and its file removed at the start of the drain.
        poll(lambda: not os.path.exists(sqlite_daemon.socket))
        with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
            RawClient(sqlite_daemon.socket)
        client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [2, 3], "id": 2})
        assert client.reply() == {"jsonrpc": "2.0", "id": 2, "result": 5}
        gate.open()
        assert client.reply() == {"jsonrpc": "2.0", "id": 1, "result": "released"}
        # An idle connection is closed without waiting for the drain to end.
        assert other.closed_by_server()
    assert sqlite_daemon.process.wait(30) == 0


def test_sigint_drains_like_sigterm(sqlite_daemon):
    """SIGINT (Ctrl-C) drains and exits 0 as SIGTERM does."""
    sqlite_daemon.signal(signal.SIGINT)
    assert sqlite_daemon.process.wait(30) == 0
    assert not os.path.exists(sqlite_daemon.socket)


def test_drain_deadline_abandons_stuck_request_and_refuses_waiting_ones(
    start_daemon, sqlite_url, gate
):
    """At the drain deadline a running request is abandoned (exit 1); queued ones get -32004."""
    daemon = start_daemon(sqlite_url, "--drain-timeout", "0.5", "--workers", "1")
    with RawClient(daemon.socket) as client:
        hold(client, gate, 1)
        gate.wait_for(1)
        client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [1, 1], "id": 2})
        poll(lambda: daemon.call("rpc.status")["queued"] == 1)
        daemon.signal(signal.SIGTERM)
        reply = client.reply()
        assert reply["id"] == 2
        assert reply["error"]["code"] == -32004
        assert daemon.process.wait(20) == 1
        assert client.closed_by_server()
    assert "drain_deadline_passed" in daemon.log()


def test_second_instance_refuses_and_first_keeps_serving(sqlite_daemon, sqlite_url):
    """A second daemon on a live socket exits non-zero with a clear message; the first is untouched."""
    inode = os.stat(sqlite_daemon.socket).st_ino
    code, output = run_daemon(sqlite_daemon.socket, sqlite_url)
    assert code != 0
    assert "already serving" in output
    assert f"pid {sqlite_daemon.pid}" in output
    assert os.stat(sqlite_daemon.socket).st_ino == inode
    assert sqlite_daemon.call("testapp.add", 1, 2) == 3


def test_path_that_is_not_a_socket_is_refused_and_left_alone(sock_path, sqlite_url):
    """A regular file at the socket path is never removed; the daemon explains and exits non-zero."""
    with open(sock_path, "w") as handle:
        handle.write("precious")
    code, output = run_daemon(sock_path, sqlite_url)
    assert code != 0
    assert "is not a socket" in output
    assert open(sock_path).read() == "precious"


def test_stale_socket_is_replaced(sock_path, sqlite_url, launch):
    """A socket file left by a dead process is removed and the daemon serves on the path."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    daemon = launch(sock_path, {"DATABASE_URL": sqlite_url})
    daemon.start()
    assert daemon.call("rpc.ping") == "pong"


def test_stale_socket_after_sigkill_is_replaced(sqlite_daemon, sqlite_url, launch):
    """After SIGKILL the leftover socket does not block the next start on the same path."""
    sqlite_daemon.process.kill()
    sqlite_daemon.process.wait(10)
    assert os.path.exists(sqlite_daemon.socket)
    successor = launch(sqlite_daemon.socket, {"DATABASE_URL": sqlite_url})
    successor.start()
    assert successor.call("rpc.ping") == "pong"


@pytest.mark.parametrize("umask", [0o000, 0o077], ids=["umask-000", "umask-077"])
@pytest.mark.parametrize("mode", ["660", "600"])
def test_socket_has_configured_mode_whatever_the_umask(sock_path, sqlite_url, launch, umask, mode):
    """The socket's permission bits are exactly the configured mode under any umask."""
    daemon = launch(sock_path, {"DATABASE_URL": sqlite_url}, "--socket-mode", mode)
    old = os.umask(umask)
    try:
        daemon.start()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == int(mode, 8)


def test_missing_socket_directory_is_a_clear_error(short_tmp, sqlite_url):
    """A socket path in a missing directory fails with a message naming the directory."""
    code, output = run_daemon(str(short_tmp / "nope" / "s.sock"), sqlite_url)
    assert code != 0
    assert f"directory {short_tmp / 'nope'}" in output


def test_bad_setting_fails_at_startup(sock_path, sqlite_url):
    """An invalid option is refused before anything is bound."""
    code, output = run_daemon(sock_path, sqlite_url, "--workers", "0")
    assert code != 0
    assert "WORKERS" in output
    assert not os.path.exists(sock_path)


def test_duplicate_handler_name_fails_startup_naming_both_places(sock_path, sqlite_url):
    """Two handlers with one name stop the daemon at startup, and the message says where both are."""
    code, output = run_daemon(sock_path, sqlite_url, TEST_EXTRA_APPS="tests.dupapp")
    assert code != 0
    assert "'testapp.add' is defined twice" in output
    assert "tests.testapp.handlers.add" in output
    assert "tests.dupapp.handlers.add_again" in output
    assert not os.path.exists(sock_path)
