"""Slow handlers never delay the loop: rpc.* is answered while every worker is busy."""

from __future__ import annotations

from tests.daemon import RawClient
from tests.waiting import busy_workers_at_least, poll


def test_ping_answered_while_a_slow_handler_runs(sqlite_daemon):
    """rpc.ping from another client is answered before a running slow handler finishes."""
    with RawClient(sqlite_daemon.socket) as slow, RawClient(sqlite_daemon.socket) as pinger:
        slow.request({"jsonrpc": "2.0", "method": "testapp.sleep", "params": [3], "id": "slow"})
        # Wait until the handler is running, by asking the daemon itself.
        busy_workers_at_least(sqlite_daemon, 1)
        pinger.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": "ping"})
        assert pinger.reply()["result"] == "pong"
        assert sqlite_daemon.call("rpc.status")["busy_workers"] == 1  # still sleeping
        assert slow.reply()["result"] == 3


def test_builtins_answered_while_every_worker_is_busy(start_daemon, sqlite_url):
    """With all workers busy and more calls queued, rpc.* still answers at once."""
    daemon = start_daemon(sqlite_url, "--workers", "2")
    with RawClient(daemon.socket) as busy:
        for n in range(4):
            busy.request({"jsonrpc": "2.0", "method": "testapp.sleep", "params": [2], "id": n})
        status = busy_workers_at_least(daemon, 2)
        assert status["queued"] == 2
        assert daemon.call("rpc.ping") == "pong"
        assert "testapp.sleep" in {m["name"] for m in daemon.call("rpc.methods")}
        assert daemon.call("rpc.status")["busy_workers"] == 2
        assert sorted(busy.reply()["id"] for _ in range(4)) == [0, 1, 2, 3]


def test_same_connection_ping_overtakes_its_own_slow_request(sqlite_daemon):
    """On one connection, a ping sent after a slow call is answered first (replies match by id)."""
    with RawClient(sqlite_daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "testapp.sleep", "params": [2], "id": "slow"})
        client.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": "ping"})
        assert client.reply()["id"] == "ping"
        assert client.reply()["id"] == "slow"


def test_full_queue_applies_backpressure_and_refuses_nothing(start_daemon, sqlite_url):
    """With the worker queue full the daemon stops reading; every request is answered once room frees."""
    daemon = start_daemon(sqlite_url, "--workers", "1", TEST_MAX_QUEUED="2")
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "testapp.sleep", "params": [0.5], "id": "slow"})
        for n in range(40):
            client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [n, 0], "id": n})
        status = poll(lambda: (s := daemon.call("rpc.status"))["queued"] >= 2 and s)
        assert status["queued"] <= 3  # bounded: held back, not queued
        assert daemon.call("rpc.ping") == "pong"
        replies = {}
        for _ in range(41):
            reply = client.reply()
            replies[reply["id"]] = reply.get("result", reply.get("error"))
    assert replies == {"slow": 0.5, **{n: n for n in range(40)}}
