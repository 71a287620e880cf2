"""JSON-RPC 2.0 over a live daemon: the spec's answers, and bad clients never hurt good ones."""

from __future__ import annotations

import json

import pytest

from socketsvc import protocol
from tests.harness.daemon import RawClient
from tests.harness.threads import Clients
from tests.harness.waiting import poll

MAX = 64 * 1024  # tests.settings SOCKETSVC["MAX_MESSAGE_BYTES"]


@pytest.fixture
def daemon(sqlite_daemon):
    return sqlite_daemon


@pytest.fixture
def bystander(daemon):
    """A well-behaved client with a request in flight while a bad one misbehaves."""
    client = RawClient(daemon.socket)
    yield client
    client.close()


def assert_served(client: RawClient, n: int) -> None:
    """The client gets the right answer to a fresh request."""
    client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [n, 1], "id": f"b{n}"})
    assert client.reply() == {"jsonrpc": "2.0", "id": f"b{n}", "result": n + 1}


def error_of(reply: dict) -> int:
    return reply["error"]["code"]


def test_positional_and_named_params(daemon):
    """Params by position and by name both reach the handler."""
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [2, 3], "id": 1})
        assert client.reply() == {"jsonrpc": "2.0", "id": 1, "result": 5}
        client.request(
            {"jsonrpc": "2.0", "method": "testapp.add", "params": {"a": 2, "b": 3}, "id": "x"}
        )
        assert client.reply() == {"jsonrpc": "2.0", "id": "x", "result": 5}
        client.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": None})
        assert client.reply() == {"jsonrpc": "2.0", "id": None, "result": "pong"}


def test_notification_gets_no_reply_but_runs(daemon):
    """A request without id runs (its note is written) and is never answered, nor is a
    notification of a method that does not exist."""
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "testapp.write_note", "params": {"text": "n1"}})
        client.request({"jsonrpc": "2.0", "method": "testapp.no_such_method"})
        client.request(
            {"jsonrpc": "2.0", "method": "testapp.count_notes", "params": ["n1"], "id": 9}
        )
        reply = client.reply()
        # The first reply on the wire is the request's, not a notification's.
        assert reply["id"] == 9
        assert reply["result"] in (0, 1)  # the notification runs on another worker
    poll(lambda: daemon.call("testapp.count_notes", "n1") == 1)
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": 10})
        assert client.reply()["id"] == 10  # nothing else was ever queued for this client


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]', protocol.PARSE_ERROR),
        (b"\xff\xfe{}", protocol.PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "method": "rpc.ping", "id": NaN}', protocol.PARSE_ERROR),
        (b"[" * 50000, protocol.PARSE_ERROR),
        (b"42", protocol.INVALID_REQUEST),
        (b'"a string"', protocol.INVALID_REQUEST),
        (b"null", protocol.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": 1, "params": "bar"}', protocol.INVALID_REQUEST),
        (b'{"jsonrpc": "1.0", "method": "rpc.ping", "id": 1}', protocol.INVALID_REQUEST),
        (b"[]", protocol.INVALID_REQUEST),
    ],
    ids=[
        "invalid-json",
        "invalid-utf8",
        "nan",
        "deep-nesting",
        "number",
        "string",
        "null",
        "method-not-string",
        "wrong-version",
        "empty-batch",
    ],
)
def test_bad_message_gets_spec_error_and_others_are_unaffected(daemon, bystander, payload, code):
    """Each malformed message gets its spec error; the connection and other clients go on."""
    bystander.request({"jsonrpc": "2.0", "method": "testapp.sleep", "params": [0.2], "id": "slow"})
    with RawClient(daemon.socket) as bad:
        bad.send(payload + b"\n")
        reply = bad.reply()
        assert error_of(reply) == code
        # An id that could be read is echoed; otherwise it is null.
        assert reply["id"] == (
            1 if code == protocol.INVALID_REQUEST and b'"id": 1' in payload else None
        )
        assert "Traceback" not in json.dumps(reply)
        # The same connection keeps working after a bad line.
        assert_served(bad, 1)
    assert bystander.reply() == {"jsonrpc": "2.0", "id": "slow", "result": 0.2}
    assert_served(bystander, 2)


def test_batches_follow_the_spec(daemon):
    """A batch gets one array; invalid members get errors; an all-notification batch gets nothing."""
    with RawClient(daemon.socket) as client:
        client.send(
            b'[{"jsonrpc": "2.0", "method": "testapp.add", "params": [1, 2], "id": "1"},'
            b'{"jsonrpc": "2.0", "method": "testapp.write_note", "params": ["batch"]},'
            b'{"jsonrpc": "2.0", "method": "rpc.ping", "id": "2"},'
            b'{"foo": "boo"},'
            b'{"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},'
            b'{"jsonrpc": "2.0", "method": "testapp.fail", "id": "9"}]\n'
        )
        replies = {reply["id"]: reply for reply in client.reply()}
        assert replies["1"]["result"] == 3
        assert replies["2"]["result"] == "pong"
        assert error_of(replies[None]) == protocol.INVALID_REQUEST
        assert error_of(replies["5"]) == protocol.METHOD_NOT_FOUND
        assert error_of(replies["9"]) == protocol.HANDLER_ERROR
        assert len(replies) == 5

        client.send(b"[1,2,3]\n")
        assert [error_of(r) for r in client.reply()] == [protocol.INVALID_REQUEST] * 3

        client.send(
            b'[{"jsonrpc": "2.0", "method": "testapp.write_note", "params": ["n"]},'
            b'{"jsonrpc": "2.0", "method": "rpc.ping"}]\n'
        )
        assert_served(client, 3)  # the next line on the wire answers this, not the batch


def test_method_not_found_and_invalid_params(daemon):
    """Unknown methods get -32601; params that do not fit the signature get -32602 naming the parameter."""
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "nope.nothing", "id": 1})
        assert error_of(client.reply()) == protocol.METHOD_NOT_FOUND
        client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": {"b": 1}, "id": 2})
        reply = client.reply()
        assert error_of(reply) == protocol.INVALID_PARAMS
        assert "'a'" in reply["error"]["message"]
        client.request(
            {"jsonrpc": "2.0", "method": "testapp.add", "params": {"a": 1, "c": 2}, "id": 3}
        )
        assert "'c'" in client.reply()["error"]["message"]
        client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": ["1"], "id": 4})
        reply = client.reply()
        assert error_of(reply) == protocol.INVALID_PARAMS
        assert reply["error"]["data"] == {"parameter": "a"}


def test_handler_exception_becomes_server_error_without_traceback(daemon):
    """A raising handler gives -32000 with the exception's type and message, and no traceback."""
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "testapp.fail", "params": ["kaput"], "id": 1})
        reply = client.reply()
        request_id = reply["error"]["data"]["request_id"]
        assert reply["error"] == {
            "code": protocol.HANDLER_ERROR,
            "message": "RuntimeError: kaput",
            "data": {
                "type": "RuntimeError",
                "message": "kaput",
                "request_id": request_id,
                "pid": daemon.pid,
            },
        }
        client.request({"jsonrpc": "2.0", "method": "testapp.not_json", "id": 2})
        reply = client.reply()
        assert error_of(reply) == protocol.INTERNAL_ERROR
        assert "not JSON" in reply["error"]["message"]
    # Logged server-side, with a structured traceback; never sent to the client.
    failures = poll(
        lambda: [e for e in daemon.log_events() if e.get("error_code") == protocol.HANDLER_ERROR]
    )
    assert failures[0]["method"] == "testapp.fail"
    assert failures[0]["request_id"] == request_id
    assert failures[0]["pid"] == daemon.pid
    assert failures[0]["event"] == "request"
    assert failures[0]["exception"][0]["exc_type"] == "RuntimeError"


def test_oversize_line_gets_error_then_close(daemon, bystander):
    """A line over the limit gets -32003 and the connection is closed; other clients go on."""
    bystander.request({"jsonrpc": "2.0", "method": "testapp.sleep", "params": [0.2], "id": "slow"})
    with RawClient(daemon.socket) as bad:
        try:
            bad.send(b'{"jsonrpc": "2.0", "method": "x", "params": ["' + b"a" * (MAX * 4))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close while we are still writing
        reply = bad.reply()
        assert error_of(reply) == protocol.MESSAGE_TOO_LARGE
        assert reply["error"]["data"] == {"limit": MAX}
        assert bad.closed_by_server()
    assert bystander.reply()["result"] == 0.2
    assert_served(bystander, 4)


def test_request_sent_one_byte_at_a_time(daemon, bystander):
    """A request trickled in byte by byte is answered once complete; others are served meanwhile."""
    with RawClient(daemon.socket) as slow:
        payload = json.dumps(
            {"jsonrpc": "2.0", "method": "testapp.add", "params": [40, 2], "id": 7}
        )
        for index, byte in enumerate(payload.encode() + b"\n"):
            slow.send(bytes([byte]))
            if index == 10:
                assert_served(bystander, 5)
        assert slow.reply() == {"jsonrpc": "2.0", "id": 7, "result": 42}


def test_several_requests_in_one_write(daemon):
    """Pipelined requests in one write each get their own reply, matched by id."""
    with RawClient(daemon.socket) as client:
        lines = [
            json.dumps({"jsonrpc": "2.0", "method": "testapp.add", "params": [n, n], "id": n})
            for n in range(50)
        ]
        client.send(("\n".join(lines) + "\n").encode())
        replies = {}
        for _ in range(50):
            reply = client.reply()
            replies[reply["id"]] = reply["result"]
        assert replies == {n: 2 * n for n in range(50)}


def test_client_disconnecting_mid_request_does_not_disturb_others(daemon, bystander, gate):
    """A client that leaves before its reply is dropped quietly; the daemon and others go on."""
    gone = RawClient(daemon.socket)
    gone.request({"jsonrpc": "2.0", "method": "testapp.hold", "params": [gate.path], "id": 1})
    gate.wait_for(1)
    gone.close()
    assert_served(bystander, 6)
    gate.open()
    poll(lambda: daemon.call("rpc.status")["dropped_replies"] == 1)
    assert_served(bystander, 7)


def test_half_closed_client_still_gets_its_replies(daemon):
    """A client that shuts down its write side after sending still receives every reply."""
    with RawClient(daemon.socket) as client:
        client.send(b'{"jsonrpc": "2.0", "method": "testapp.add", "params": [1, 1], "id": 1}\n')
        client.send(b'{"jsonrpc": "2.0", "method": "testapp.add", "params": [2, 2], "id": 2}')
        client.sock.shutdown(1)
        replies = sorted([client.reply(), client.reply()], key=lambda r: r["id"])
        assert [r["result"] for r in replies] == [2, 4]
        assert client.closed_by_server()


def test_many_concurrent_clients_each_get_their_own_answers(daemon):
    """Twenty clients pipelining at once each receive exactly their own replies."""
    errors: list[str] = []

    def client_run(k: int) -> None:
        with RawClient(daemon.socket) as client:
            for n in range(20):
                client.request(
                    {"jsonrpc": "2.0", "method": "testapp.add", "params": [k, n], "id": n}
                )
            got = {}
            for _ in range(20):
                reply = client.reply()
                got[reply["id"]] = reply.get("result", reply.get("error"))
            if got != {n: k + n for n in range(20)}:
                errors.append(f"client {k}: {got}")

    Clients(client_run, [(k,) for k in range(20)]).start().join()
    assert errors == []
