"""Slow handlers never delay the loop: rpc.* is answered while every worker is busy."""

from __future__ import annotations

from tests.harness.daemon import RawClient
from tests.harness.waiting import poll


def hold(client: RawClient, gate, request_id) -> None:
    client.request(
        {"jsonrpc": "2.0", "method": "testapp.hold", "params": [gate.path], "id": request_id}
    )


def test_ping_answered_while_a_slow_handler_runs(sqlite_daemon, gate):
    """rpc.ping from another client is answered while a handler is still running."""
    with RawClient(sqlite_daemon.socket) as slow, RawClient(sqlite_daemon.socket) as pinger:
        hold(slow, gate, "slow")
        gate.wait_for(1)
        pinger.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": "ping"})
        assert pinger.reply()["result"] == "pong"
        assert sqlite_daemon.call("rpc.status")["busy_workers"] == 1  # still held
        gate.open()
        assert slow.reply()["result"] == "released"


def test_builtins_answered_while_every_worker_is_busy(start_daemon, sqlite_url, gate):
    """With all workers busy and more calls queued, rpc.* still answers at once."""
    daemon = start_daemon(sqlite_url, "--workers", "2")
    with RawClient(daemon.socket) as busy:
        for n in range(4):
            hold(busy, gate, n)
        gate.wait_for(2)
        status = poll(lambda: (s := daemon.call("rpc.status"))["queued"] == 2 and s)
        assert status["busy_workers"] == 2
        assert daemon.call("rpc.ping") == "pong"
        assert "testapp.hold" in {m["name"] for m in daemon.call("rpc.methods")}
        gate.open()
        gate.wait_for(4)
        gate.open()
        assert sorted(busy.reply()["id"] for _ in range(4)) == [0, 1, 2, 3]


def test_same_connection_ping_overtakes_its_own_slow_request(sqlite_daemon, gate):
    """On one connection, a ping sent after a held call is answered first (replies match by id)."""
    with RawClient(sqlite_daemon.socket) as client:
        hold(client, gate, "slow")
        client.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": "ping"})
        assert client.reply()["id"] == "ping"
        gate.wait_for(1)
        gate.open()
        assert client.reply()["id"] == "slow"


def test_full_queue_applies_backpressure_and_refuses_nothing(start_daemon, sqlite_url, gate):
    """With the worker queue full the daemon stops reading; every request is answered once room frees."""
    daemon = start_daemon(sqlite_url, "--workers", "1", MAX_QUEUED=2)
    with RawClient(daemon.socket) as client:
        hold(client, gate, "slow")
        gate.wait_for(1)
        for n in range(40):
            client.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [n, 0], "id": n})
        status = poll(lambda: (s := daemon.call("rpc.status"))["queued"] >= 2 and s)
        assert status["queued"] <= 3  # bounded: held back, not queued
        assert daemon.call("rpc.ping") == "pong"
        gate.open()
        replies = {}
        for _ in range(41):
            reply = client.reply()
            replies[reply["id"]] = reply.get("result", reply.get("error"))
    assert replies == {"slow": "released", **{n: n for n in range(40)}}
