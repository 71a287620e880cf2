"""The client keeps one connection per thread and socket, and resends only what was never read."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from collections.abc import Callable

import pytest

from socketsvc import AccessDenied, ProtocolError, ServiceUnavailable, call, notify
from socketsvc.client import close_connections
from tests.harness.daemon import Daemon
from tests.harness.waiting import poll


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


def test_kept_connection_closed_by_the_service_is_replaced(short_tmp, sqlite_url, launch):
    """After the service closes an idle kept connection, the next call reconnects and succeeds."""
    daemon = launch(
        str(short_tmp / "c.sock"), {"DATABASE_URL": sqlite_url}, settings={"IDLE_TIMEOUT": 0.3}
    )
    daemon.start()
    assert call("testapp.add", 1, 2, socket=daemon.socket) == 3
    poll(lambda: "idle_connection_closed" in daemon.log())
    assert call("testapp.add", 2, 2, socket=daemon.socket) == 4


def test_kept_connection_survives_a_daemon_restart(short_tmp, sqlite_url, launch):
    """A call after the daemon was restarted on the same path succeeds on a new connection."""
    path = str(short_tmp / "r.sock")
    first = launch(path, {"DATABASE_URL": sqlite_url})
    first.start()
    assert call("testapp.add", 1, 1, socket=path) == 2
    assert first.stop() == 0
    second = launch(path, {"DATABASE_URL": sqlite_url})
    second.start()
    assert call("testapp.add", 3, 1, socket=path) == 4


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_use_the_parents_connection(sqlite_daemon):
    """After fork, the child opens its own connection; parent and child both get their replies."""
    close_connections()
    assert call("testapp.add", 0, 1, socket=sqlite_daemon.socket) == 1
    before = accepted(sqlite_daemon)  # on the parent's kept connection
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
    assert accepted(sqlite_daemon) == before + 1  # the child's own, and no other


class KeepingServer:
    """A Unix socket server that keeps connections open and answers by script.

    ``answer(request)`` returns the reply object for each request; every
    connection accepted is counted.
    """

    def __init__(self, path: str, answer: Callable[[dict], dict]) -> None:
        self.path = path
        self.answer = answer
        self.accepted = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn, self.accepted), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        """Answer every line of the *number*-th connection."""
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                self._answer(conn, line)

    def _answer(self, conn: socket.socket, line: bytes) -> None:
        reply = self.answer(json.loads(line))
        conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    ("bad", "raised"),
    [
        (lambda request: {"jsonrpc": "2.0", "id": "someone-else", "result": 1}, ProtocolError),
        (
            lambda request: {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32005, "message": "no"},
            },
            AccessDenied,
        ),
    ],
    ids=["wrong-id", "refusal"],
)
def test_a_connection_that_gave_a_bad_reply_is_not_kept(sock_path, bad, raised):
    """After a reply to another id, or a refusal, the next call uses a new connection."""
    replies = iter([bad])

    def answer(request: dict) -> dict:
        script = next(replies, None)
        if script is not None:
            return script(request)
        return {"jsonrpc": "2.0", "id": request["id"], "result": "fine"}

    close_connections()
    server = KeepingServer(sock_path, answer)
    try:
        with pytest.raises(raised):
            call("x.y", socket=sock_path, timeout=5)
        assert call("x.y", socket=sock_path, timeout=5) == "fine"
        assert server.accepted == 2
        assert call("x.y", socket=sock_path, timeout=5) == "fine"
        assert server.accepted == 2  # a good reply keeps the connection
    finally:
        close_connections()
        server.close()


class DyingServer(KeepingServer):
    """Answers the first request on its first connection, then, when the second arrives,
    closes that connection having read it (``read=True``: a worker that died running it) or
    with it unread (a connection closed idle just as the request came). Every later
    connection is answered normally. ``received`` counts the request lines it read."""

    def __init__(self, path: str, *, read: bool) -> None:
        self.read = read
        self.received = 0
        super().__init__(path, lambda request: {"jsonrpc": "2.0", "id": request["id"], "result": 1})

    def _answer(self, conn: socket.socket, line: bytes) -> None:
        self.received += 1
        super()._answer(conn, line)

    def _serve(self, conn: socket.socket, number: int) -> None:
        if number > 1:
            super()._serve(conn, number)
            return
        with conn, conn.makefile("rb") as lines:
            self._answer(conn, lines.readline())
            select.select([conn], [], [], 10)  # the second request is here, unread
            if self.read:
                lines.readline()
                self.received += 1
            # closed: after reading it, or with it unread (a reset)


def test_a_request_the_service_read_before_closing_is_never_sent_again(sock_path):
    """The kept connection ends cleanly after the service read the request: the call fails
    with ServiceUnavailable ("lost"), and the service saw the request once."""
    close_connections()
    server = DyingServer(sock_path, read=True)
    try:
        assert call("x.y", socket=sock_path, timeout=5) == 1
        with pytest.raises(ServiceUnavailable) as caught:
            call("x.y", socket=sock_path, timeout=5)
        assert caught.value.reason == "lost"
        assert (server.received, server.accepted) == (2, 1)
    finally:
        close_connections()
        server.close()


def test_a_request_closed_unread_is_sent_again_on_a_new_connection(sock_path):
    """The kept connection is closed with the request unread (reset): it is sent again, once,
    on a new connection, and answered."""
    close_connections()
    server = DyingServer(sock_path, read=False)
    try:
        assert call("x.y", socket=sock_path, timeout=5) == 1
        assert call("x.y", socket=sock_path, timeout=5) == 1
        assert (server.received, server.accepted) == (2, 2)
    finally:
        close_connections()
        server.close()


def test_a_notification_the_service_drops_unread_is_service_unavailable(sock_path):
    """The service closes a notification's connection without reading it (a 1 MB line fills
    the socket first, so the send fails): notify() raises ServiceUnavailable, the client's
    typed error, not an internal one."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen()

    def drop_one() -> None:
        conn, _ = listener.accept()
        conn.close()

    dropper = threading.Thread(target=drop_one, daemon=True)
    dropper.start()
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            notify("x.y", text="x" * 1_000_000, socket=sock_path, timeout=5)
        assert caught.value.reason == "lost"
    finally:
        dropper.join(5)
        listener.close()
