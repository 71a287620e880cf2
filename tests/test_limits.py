"""Every limit, one by one: the offender gets a clear error or a close; other clients go on."""

from __future__ import annotations

import json
import socket
import time

import pytest

from socketsvc import protocol
from socketsvc.client import close_connections
from tests.daemon import Daemon, RawClient, socketsvc_settings
from tests.waiting import poll

LIMITS = {
    "IDLE_TIMEOUT": 0.6,
    "REQUEST_TIMEOUT": 0.6,
    "MAX_CONNECTIONS": 4,
    "MAX_CONNECTIONS_PER_UID": 3,
    "MAX_OUTPUT_BYTES": 64 * 1024,
    "MAX_BATCH": 5,
    "MAX_JSON_DEPTH": 16,
    "MAX_NUMBER_DIGITS": 30,
}


@pytest.fixture
def limited(short_tmp, sqlite_url, daemons):
    """A daemon with small limits (see LIMITS), the per-uid cap above the connection cap."""

    def start(**overrides) -> Daemon:
        settings = socketsvc_settings(short_tmp / "limits.json", **{**LIMITS, **overrides})
        daemon = Daemon(str(short_tmp / "l.sock"), {"DATABASE_URL": sqlite_url, **settings})
        daemons.append(daemon)
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
    daemon = limited()
    with RawClient(daemon.socket) as idle, RawClient(daemon.socket) as busy:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            request(busy, "testapp.add", [1, 1], 1)
            assert busy.reply()["result"] == 2
            time.sleep(0.1)
        assert idle.closed_by_server()


def test_half_received_request_gets_request_timeout(limited):
    """A line left incomplete past REQUEST_TIMEOUT gets -32006 and a close; others are served."""
    daemon = limited(IDLE_TIMEOUT=30)
    with RawClient(daemon.socket) as stalled, RawClient(daemon.socket) as other:
        stalled.send(b'{"jsonrpc": "2.0", "method": "rpc.ping", "id": 1')
        request(other, "testapp.add", [2, 2], "o")
        assert other.reply()["result"] == 4
        reply = stalled.reply()
        assert reply["error"]["code"] == protocol.REQUEST_TIMEOUT
        assert stalled.closed_by_server()
        request(other, "testapp.add", [3, 3], "o2")
        assert other.reply()["result"] == 6


def test_connection_cap_defers_extra_clients_until_one_leaves(limited):
    """At MAX_CONNECTIONS the daemon stops accepting; the next client is served once one leaves."""
    daemon = limited(MAX_CONNECTIONS_PER_UID=100)
    clients = [RawClient(daemon.socket) for _ in range(4)]
    try:
        poll(lambda: "connection_limit_reached" in daemon.log())
        waiting = RawClient(daemon.socket)  # queued in the listen backlog
        request(waiting, "testapp.add", [5, 5], "w")
        for n, client in enumerate(clients):
            request(client, "testapp.add", [n, 0], n)
            assert client.reply()["result"] == n
        clients.pop().close()
        assert waiting.reply()["result"] == 10
        waiting.close()
    finally:
        for client in clients:
            client.close()


def test_connections_per_uid_are_capped(limited):
    """A uid over MAX_CONNECTIONS_PER_UID gets -32002 on the extra connection, which is closed."""
    daemon = limited(MAX_CONNECTIONS=100)
    clients = [RawClient(daemon.socket) for _ in range(3)]
    try:
        for n, client in enumerate(clients):
            request(client, "testapp.add", [n, 1], n)
            assert client.reply()["result"] == n + 1
        with RawClient(daemon.socket) as extra:
            reply = extra.reply()
            assert reply["error"]["code"] == protocol.SERVER_BUSY
            assert "connections open" in reply["error"]["message"]
            assert extra.closed_by_server()
        clients.pop().close()

        def replacement_served() -> bool:
            # Admitted once the daemon has seen the close (it races with this connect).
            with RawClient(daemon.socket) as replacement:
                request(replacement, "rpc.ping", None, "r")
                return replacement.reply().get("result") == "pong"

        assert poll(replacement_served)
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
