"""Every limit, one by one: the offender gets a clear error or a close; other clients go on."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time

import pytest

from socketsvc import call, protocol
from socketsvc.client import close_connections
from tests.harness.daemon import Daemon, RawClient
from tests.harness.waiting import poll

# The two timeouts are long here, so that no other test's client is closed for idling on a
# busy machine; the tests of the timeouts themselves set them short.
SHORT_TIMEOUT = 1.0
LIMITS = {
    "IDLE_TIMEOUT": 30.0,
    "REQUEST_TIMEOUT": 30.0,
    "MAX_CONNECTIONS": 4,
    "MAX_CONNECTIONS_PER_UID": 3,
    "MAX_OUTPUT_BYTES": 64 * 1024,
    "MAX_BATCH": 5,
    "MAX_JSON_DEPTH": 16,
    "MAX_NUMBER_DIGITS": 30,
}


@pytest.fixture
def limited(short_tmp, sqlite_url, launch):
    """A daemon with small limits (see LIMITS), the per-uid cap above the connection cap."""

    def start(**overrides) -> Daemon:
        daemon = launch(
            str(short_tmp / "l.sock"),
            {"DATABASE_URL": sqlite_url},
            settings={**LIMITS, **overrides},
        )
        daemon.start()
        close_connections()  # the readiness ping's kept connection would count
        return daemon

    return start


def request(client: RawClient, method: str, params, request_id) -> None:
    message = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    client.request(message)


def test_idle_connection_is_closed_after_idle_timeout(limited):
    """A client that sends nothing is disconnected after IDLE_TIMEOUT; a busy one is not."""
    daemon = limited(IDLE_TIMEOUT=SHORT_TIMEOUT)
    with RawClient(daemon.socket) as idle, RawClient(daemon.socket) as busy:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            request(busy, "testapp.add", [1, 1], 1)
            assert busy.reply()["result"] == 2
            time.sleep(0.1)
        assert idle.closed_by_server()


def test_half_received_request_gets_request_timeout(limited):
    """A line left incomplete past REQUEST_TIMEOUT gets -32006 and a close; others are served."""
    daemon = limited(REQUEST_TIMEOUT=SHORT_TIMEOUT)
    with RawClient(daemon.socket) as stalled, RawClient(daemon.socket) as other:
        stalled.send(b'{"jsonrpc": "2.0", "method": "rpc.ping", "id": 1')
        request(other, "testapp.add", [2, 2], "o")
        assert other.reply()["result"] == 4
        reply = stalled.reply()
        assert reply["error"]["code"] == protocol.REQUEST_TIMEOUT
        assert stalled.closed_by_server()
        request(other, "testapp.add", [3, 3], "o2")
        assert other.reply()["result"] == 6


def busy_clients(daemon: Daemon, gate, count: int) -> list[RawClient]:
    """Open *count* connections, each with a call held at the gate."""
    clients = [RawClient(daemon.socket) for _ in range(count)]
    for n, client in enumerate(clients):
        request(client, "testapp.hold", [gate.path], n)
    gate.wait_for(count)
    return clients


def served_clients(daemon: Daemon, count: int) -> list[RawClient]:
    """Open *count* connections, each answered once (the first is the longest idle).

    They ping: the loop answers a ping itself, so each is idle in the daemon's books the
    moment its reply is out. A handler's reply goes out from a worker thread, and the
    loop learns of it a moment later; at a cap reached within that moment, the just
    answered connection counts as busy and another idle one is closed instead.
    """
    clients = [RawClient(daemon.socket) for _ in range(count)]
    for n, client in enumerate(clients):
        request(client, "rpc.ping", None, n)
        assert client.reply()["result"] == "pong"
    return clients


def test_at_the_connection_cap_the_longest_idle_connection_makes_room(limited):
    """At MAX_CONNECTIONS a new client is served at once; the longest-idle one is closed."""
    daemon = limited(MAX_CONNECTIONS_PER_UID=100)
    clients = served_clients(daemon, 4)
    try:
        with RawClient(daemon.socket) as newcomer:
            request(newcomer, "testapp.add", [5, 5], "n")
            assert newcomer.reply()["result"] == 10
        assert clients[0].closed_by_server()
        for n, client in enumerate(clients[1:], 1):
            request(client, "testapp.add", [n, 2], n)
            assert client.reply()["result"] == n + 2
    finally:
        for client in clients:
            client.close()


def test_at_the_connection_cap_with_every_connection_busy_the_next_client_waits(limited, gate):
    """At MAX_CONNECTIONS with calls in flight everywhere, a new client waits, then is served."""
    daemon = limited(MAX_CONNECTIONS_PER_UID=100)
    clients = busy_clients(daemon, gate, 4)
    try:
        waiting = RawClient(daemon.socket)  # queued in the listen backlog
        request(waiting, "testapp.add", [5, 5], "w")
        poll(lambda: "connection_limit_reached" in daemon.log())
        gate.open()
        for n, client in enumerate(clients):
            assert client.reply() == {"jsonrpc": "2.0", "id": n, "result": "released"}
        assert waiting.reply()["result"] == 10
        waiting.close()
    finally:
        for client in clients:
            client.close()


def test_at_the_per_uid_cap_the_uids_longest_idle_connection_makes_room(limited):
    """At MAX_CONNECTIONS_PER_UID the uid's longest-idle connection is closed for the new one."""
    daemon = limited(MAX_CONNECTIONS=100)
    clients = served_clients(daemon, 3)
    try:
        with RawClient(daemon.socket) as newcomer:
            request(newcomer, "rpc.ping", None, "p")
            assert newcomer.reply()["result"] == "pong"
        assert clients[0].closed_by_server()
        request(clients[2], "testapp.add", [1, 1], "x")
        assert clients[2].reply()["result"] == 2
        assert daemon.call("rpc.status")["connections_evicted"] >= 1
    finally:
        for client in clients:
            client.close()


def test_at_the_per_uid_cap_with_every_connection_busy_the_next_is_refused(limited, gate):
    """A uid whose MAX_CONNECTIONS_PER_UID connections are all busy gets -32002 for another."""
    daemon = limited(MAX_CONNECTIONS=100)
    clients = busy_clients(daemon, gate, 3)
    try:
        with RawClient(daemon.socket) as extra:
            reply = extra.reply()
            assert reply["error"]["code"] == protocol.SERVER_BUSY
            assert "connections open, all busy" in reply["error"]["message"]
            assert extra.closed_by_server()
        gate.open()
        for client in clients:
            assert client.reply()["result"] == "released"
    finally:
        for client in clients:
            client.close()


def test_client_that_never_reads_is_disconnected_at_the_output_cap(limited):
    """Replies pile up for a client that does not read; past MAX_OUTPUT_BYTES it is closed."""
    daemon = limited(MAX_PENDING_PER_CONNECTION=1000)
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect(daemon.socket)
    hog.settimeout(5)
    payload = "x" * 16000
    try:
        for n in range(200):
            line = {"jsonrpc": "2.0", "method": "testapp.echo", "params": [payload], "id": n}
            hog.sendall(json.dumps(line).encode() + b"\n")
    except (TimeoutError, BrokenPipeError, ConnectionResetError):
        pass  # the daemon stopped reading, or already closed us
    poll(lambda: "output_cap_exceeded" in daemon.log())
    with RawClient(daemon.socket) as other:
        request(other, "testapp.add", [1, 2], 1)
        assert other.reply()["result"] == 3
    hog.close()


@pytest.mark.parametrize(
    ("payload", "code", "text"),
    [
        (
            json.dumps([{"jsonrpc": "2.0", "method": "rpc.ping", "id": n} for n in range(6)]),
            protocol.INVALID_REQUEST,
            "exceeds the limit of 5",
        ),
        ("[" * 17 + "]" * 17, protocol.PARSE_ERROR, "nested deeper than 16"),
        (
            '{"jsonrpc": "2.0", "method": "testapp.echo", "params": [' + "9" * 31 + '], "id": 1}',
            protocol.PARSE_ERROR,
            "more than 30 digits",
        ),
        (
            '{"jsonrpc": "2.0", "method": "testapp.echo", "params": [1e400], "id": 1}',
            protocol.PARSE_ERROR,
            "out of range",
        ),
        (
            '{"jsonrpc": "2.0", "method": "testapp.echo", "params": [Infinity], "id": 1}',
            protocol.PARSE_ERROR,
            "Infinity is not valid JSON",
        ),
    ],
    ids=["batch-size", "nesting", "long-number", "overflowing-float", "infinity"],
)
def test_message_limits(limited, payload, code, text):
    """Oversized batches, deep nesting and huge numbers get a clear error; the connection goes on."""
    daemon = limited()
    with RawClient(daemon.socket) as client:
        client.send(payload.encode() + b"\n")
        reply = client.reply()
        assert reply["error"]["code"] == code
        assert text in reply["error"]["message"]
        request(client, "testapp.add", [1, 1], "after")
        assert client.reply()["result"] == 2


def test_within_limits_passes(limited):
    """A batch at the limit, nesting at the limit and long digit strings are accepted."""
    daemon = limited()
    with RawClient(daemon.socket) as client:
        client.request([{"jsonrpc": "2.0", "method": "rpc.ping", "id": n} for n in range(5)])
        assert len(client.reply()) == 5
        nested: object = 1
        for _ in range(13):
            nested = [nested]
        request(client, "testapp.echo", [nested, "9" * 500], "deep")
        assert client.reply()["result"]["args"][1] == "9" * 500


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_two_thousand_idle_connections_never_lock_out_an_active_client(sqlite_daemon):
    """With the default caps, one uid opens 2,000 connections and leaves them idle while a
    client of the same uid keeps calling: every call is answered, and the daemon stays small."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 2200, f"the open-files hard limit ({hard}) is too low for this test"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2200), hard))
    daemon = sqlite_daemon
    rss_before = rss_kib(daemon.pid)
    stop = threading.Event()
    answered: list[int] = []
    errors: list[BaseException] = []

    def keep_calling() -> None:
        n = 0
        while not stop.is_set():
            try:
                assert call("testapp.add", n, 1, socket=daemon.socket, timeout=20) == n + 1
            except BaseException as exc:
                errors.append(exc)
                return
            answered.append(n)
            n += 1
        close_connections()

    caller = threading.Thread(target=keep_calling)
    caller.start()
    idle: list[socket.socket] = []
    try:
        for _ in range(2000):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(daemon.socket)  # blocking: waits while the backlog is full
            idle.append(sock)
        status = poll(
            lambda: (s := daemon.call("rpc.status"))["connections_evicted"] >= 2000 - 256 and s
        )
        assert status["connections"] <= 256 + 2
        # With all 2,000 opened and the idle ones evicted, the active client goes on being
        # served: wait (bounded) for further answers rather than counting calls in a time.
        held = len(answered)
        poll(lambda: errors or len(answered) >= held + 10)
    finally:
        stop.set()
        caller.join(30)
        for sock in idle:
            sock.close()
    assert errors == []
    assert len(answered) >= held + 10
    assert rss_kib(daemon.pid) - rss_before < 32 * 1024


def open_files_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-files line")


class LimitedDaemon(Daemon):
    """A daemon started with an open-files limit of 256, hard 512 (util-linux's prlimit)."""

    def command(self) -> list[str]:
        return ["prlimit", "--nofile=256:512", "--", *super().command()]


def test_the_daemon_raises_its_open_files_limit_and_warns_when_the_caps_exceed_it(
    short_tmp, sqlite_url, launch
):
    """Started with a soft limit of 256 under a hard 512, the daemon serves with 512 and
    warns that MAX_CONNECTIONS (1,024) needs more."""
    daemon = launch(str(short_tmp / "r.sock"), {"DATABASE_URL": sqlite_url}, kind=LimitedDaemon)
    daemon.start()
    assert open_files_limit(daemon.pid) == (512, 512)
    warning = next(e for e in daemon.log_events() if e["event"] == "open_files_limit_below_caps")
    assert warning["limit"] == 512
    assert warning["max_connections"] == 1024
