"""systemd integration, emulated without systemd: socket activation, sd_notify, the watchdog."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from socketsvc import call
from socketsvc.client import SocketServiceError
from tests.harness.activation import Activator
from tests.harness.daemon import Daemon, RawClient
from tests.harness.threads import Clients
from tests.harness.waiting import poll


@pytest.fixture
def activator(short_tmp):
    parent = Activator(str(short_tmp / "act.sock"))
    yield parent
    parent.close()


def test_activated_daemon_serves_and_leaves_the_socket_on_sigterm(activator, sqlite_url, launch):
    """A daemon given the socket as fd 3 serves on it, exits 0 on SIGTERM, and never removes it."""
    daemon = launch(activator.path, {"DATABASE_URL": sqlite_url}, activation=activator).start()
    assert daemon.call("testapp.add", 2, 2) == 4
    listening = [e for e in daemon.log_events() if e["event"] == "listening"]
    assert [e["socket"] for e in listening] == [f"{activator.path} (from systemd)"]
    assert daemon.stop() == 0
    assert os.path.exists(activator.path)
    # The socket still works: a successor started on it serves.
    successor = launch(activator.path, {"DATABASE_URL": sqlite_url}, activation=activator).start()
    assert successor.call("rpc.ping") == "pong"
    assert successor.call("rpc.status")["pid"] == successor.pid


def process_state(pid: int) -> str:
    """Return the kernel's one-letter state of *pid* (R, S, T for stopped, ...)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_restart_with_the_socket_held_loses_no_request(activator, sqlite_url, launch):
    """Restarting the daemon while 8 clients call continuously fails no request."""
    first = launch(activator.path, {"DATABASE_URL": sqlite_url}, activation=activator).start()
    stop = threading.Event()
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        n = 0
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                ok = call("testapp.add", k, n, socket=activator.path, timeout=30) == k + n
            except SocketServiceError:
                ok = False
            with lock:
                results.append((k, ok))
            n += 1

    clients = Clients(client, [(k,) for k in range(8)]).start()
    try:
        poll(lambda: len(results) >= 200)
        first.signal(signal.SIGTERM)  # as systemctl restart: stop, then start
        assert first.process.wait(30) == 0
        served_by_first = len(results)
        second = launch(activator.path, {"DATABASE_URL": sqlite_url}, activation=activator).start(
            wait=False
        )
        poll(lambda: len(results) >= served_by_first + 200)
    finally:
        stop.set()
        clients.join()
    failed = [result for result in results if not result[1]]
    assert failed == []
    assert second.call("rpc.status")["requests"] >= 200


@pytest.mark.parametrize(
    ("make_fd", "message"),
    [
        (lambda tmp: os.open(tmp / "plain-file", os.O_CREAT | os.O_RDWR), "is not a socket"),
        (
            lambda tmp: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).detach(),
            "not SOCK_STREAM",
        ),
        (lambda tmp: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach(), "not listening"),
    ],
    ids=["regular-file", "datagram-socket", "unlistened-socket"],
)
def test_activation_with_a_wrong_fd_fails_clearly(short_tmp, sqlite_url, make_fd, message):
    """An inherited fd that is not a listening Unix stream socket stops startup with a clear error."""
    fd = make_fd(short_tmp)
    daemon = Daemon(str(short_tmp / "a.sock"), {"DATABASE_URL": sqlite_url}, activation=fd)
    try:
        code, output = daemon.run_to_exit()
    finally:
        os.close(fd)
    assert code != 0
    assert message in output
    assert "Traceback" not in output


def test_listen_pid_of_another_process_means_no_activation(sock_path, sqlite_url, launch):
    """LISTEN_FDS meant for another pid is ignored: the daemon binds its own socket."""
    daemon = launch(sock_path, {"DATABASE_URL": sqlite_url, "LISTEN_FDS": "1", "LISTEN_PID": "1"})
    daemon.start()
    assert daemon.call("rpc.ping") == "pong"
    assert daemon.stop() == 0
    assert not os.path.exists(sock_path)


def test_notify_ready_status_watchdog_and_stopping(notify_socket, sock_path, sqlite_url, launch):
    """READY=1 comes once the socket listens; WATCHDOG=1 comes from the loop; STOPPING=1 on SIGTERM."""
    daemon = launch(
        sock_path,
        {
            "DATABASE_URL": sqlite_url,
            "NOTIFY_SOCKET": notify_socket.path,
            "WATCHDOG_USEC": "400000",
        },
    )
    daemon.start(wait=False)
    ready = notify_socket.wait_for("READY=1")[-1]
    RawClient(sock_path).close()  # already listening when READY=1 was sent
    assert f"MAINPID={daemon.pid}" in ready
    assert any(field.startswith("STATUS=Serving") for field in ready)

    for _ in range(3):  # the loop keeps feeding it (every 200 ms)
        notify_socket.wait_for("WATCHDOG=1", timeout=5)

    daemon.signal(signal.SIGSTOP)
    try:
        # Once the kernel says it is stopped, nothing it sent can still be on its way:
        # drain what came before, then nothing may come until it is continued.
        poll(lambda: process_state(daemon.pid) == "T")
        while notify_socket.receive(0) is not None:
            pass
        assert notify_socket.receive(0) is None
    finally:
        daemon.signal(signal.SIGCONT)
    assert "WATCHDOG=1" in notify_socket.wait_for("WATCHDOG=1", timeout=5)[-1]

    daemon.signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING=1", timeout=10)
    assert daemon.process.wait(30) == 0


def test_watchdog_stops_while_every_worker_is_stuck_and_resumes_after(
    notify_socket, gate, short_tmp, sqlite_url, launch
):
    """A call waiting STALL_TIMEOUT with every worker stuck: STATUS=Stalled and no WATCHDOG=1,
    though the loop still turns; once a worker frees up, the pings come back."""
    daemon = launch(
        str(short_tmp / "d.sock"),
        {
            "DATABASE_URL": sqlite_url,
            "NOTIFY_SOCKET": notify_socket.path,
            "WATCHDOG_USEC": "200000",
        },
        "--workers",
        "1",
        settings={"STALL_TIMEOUT": 0.5},
    )
    daemon.start()
    notify_socket.wait_for("READY=1")
    with RawClient(daemon.socket) as stuck, RawClient(daemon.socket) as queued:
        stuck.request({"jsonrpc": "2.0", "method": "testapp.hold", "params": [gate.path], "id": 1})
        gate.wait_for(1)
        queued.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [1, 1], "id": 2})
        notify_socket.wait_for_prefix("STATUS=Stalled", timeout=10)
        # The loop answers rpc.status itself: once an answer says a second (five watchdog
        # intervals) went by since the stall was announced, every datagram the daemon sent
        # before that answer is already here, and none may be WATCHDOG=1.
        since = daemon.call("rpc.status")["uptime"]
        status = poll(lambda: (s := daemon.call("rpc.status"))["uptime"] >= since + 1.0 and s)
        assert status["workers_progressing"] is False
        while (fields := notify_socket.receive(0)) is not None:
            assert "WATCHDOG=1" not in fields
        gate.open()
        assert stuck.reply()["result"] == "released"
        assert queued.reply()["result"] == 2
    notify_socket.wait_for("WATCHDOG=1", timeout=5)
    assert "workers_stalled" in daemon.log()


def test_notify_to_an_abstract_socket(short_tmp, sock_path, sqlite_url, launch):
    """NOTIFY_SOCKET=@name (abstract namespace) receives READY=1 too."""
    name = f"socketsvc-test-{os.getpid()}-{short_tmp.name}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(30)
    try:
        daemon = launch(sock_path, {"DATABASE_URL": sqlite_url, "NOTIFY_SOCKET": "@" + name})
        daemon.start(wait=False)
        fields = set()
        while "READY=1" not in fields:
            fields = set(listener.recv(4096).decode().split("\n"))
    finally:
        listener.close()


def test_ready_comes_while_the_database_is_down_and_status_says_so(
    notify_socket, private_mariadb, short_tmp, launch
):
    """With MariaDB down the daemon is up and serves (calls wait for the database, then get
    -32001): READY=1 comes at once, STATUS= and rpc.status name the database as unavailable;
    once it is back, rpc.status says ready and available."""
    private_mariadb.stop()
    daemon = launch(
        str(short_tmp / "d.sock"),
        {"DATABASE_URL": private_mariadb.url(), "NOTIFY_SOCKET": notify_socket.path},
    )
    daemon.start()
    ready = notify_socket.wait_for("READY=1", timeout=30)[-1]
    assert any(f.startswith("STATUS=") and "database default unavailable" in f for f in ready)
    status = daemon.call("rpc.status")
    assert status["ready"] is False
    assert status["databases"]["default"]["available"] is False
    private_mariadb.start()
    poll(lambda: daemon.call("rpc.status")["ready"], why=daemon.log)
    assert daemon.call("rpc.status")["databases"]["default"] == {"available": True}
