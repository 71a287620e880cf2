"""Workers outlive whatever a handler returns or raises, and a wedged pool stops the watchdog."""

from __future__ import annotations

import pytest

from socketsvc import protocol
from tests.harness.daemon import RawClient


@pytest.mark.parametrize(
    ("method", "params"),
    [("testapp.deep_result", [10_000]), ("testapp.not_json", []), ("testapp.fail", ["x"])],
    ids=["nested-10000", "not-json", "raises"],
)
def test_one_worker_survives_a_result_it_cannot_send(start_daemon, sqlite_url, method, params):
    """With one worker, a result that cannot be encoded (or an exception) is answered with an
    error, and every later call is still served by that worker."""
    daemon = start_daemon(sqlite_url, "--workers", "1")
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
        reply = client.reply()
        assert reply["error"]["code"] in (protocol.INTERNAL_ERROR, protocol.HANDLER_ERROR)
        for n in range(3):
            client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [n, 1], "id": n})
            assert client.reply()["result"] == n + 1


def test_a_result_nested_too_deep_is_an_internal_error(sqlite_daemon):
    """A handler returning a list nested 10,000 deep gets -32603, naming the method."""
    with RawClient(sqlite_daemon.socket) as client:
        client.request(
            {"jsonrpc": "2.0", "method": "testapp.deep_result", "params": [10_000], "id": 1}
        )
        error = client.reply()["error"]
        assert error["code"] == protocol.INTERNAL_ERROR
        assert "testapp.deep_result" in error["message"]
        assert "RecursionError" in error["message"]
