"""SIGHUP reloads SOCKETSVC in a running daemon: new values in force, requests in flight
answered, a broken value refused, settings that need a restart kept (and logged). With
worker processes, a reload replaces the workers instead (tests/daemon/test_processes.py)."""

from __future__ import annotations

import contextlib
import json
import signal

from tests.harness.daemon import RawClient
from tests.harness.waiting import busy_workers_at_least, poll


def test_sighup_rereads_settings_without_dropping_requests(
    notify_socket, short_tmp, sqlite_url, launch
):
    """SIGHUP applies new SOCKETSVC values (RELOADING=1 then READY=1); a request in flight completes."""
    daemon = launch(
        str(short_tmp / "d.sock"),
        {"DATABASE_URL": sqlite_url, "NOTIFY_SOCKET": notify_socket.path},
        settings={"IDLE_TIMEOUT": 50, "WORKERS": 2},
    )
    daemon.start()
    notify_socket.wait_for("READY=1")
    assert daemon.call("rpc.status")["config"]["IDLE_TIMEOUT"] == 50
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "testapp.sleep", "params": [1], "id": 1})
        busy_workers_at_least(daemon, 1)
        daemon.reconfigure(IDLE_TIMEOUT=70, WORKERS=3, SOCKET_MODE=0o600)
        daemon.signal(signal.SIGHUP)
        seen = notify_socket.wait_for("READY=1")
        assert any("RELOADING=1" in fields for fields in seen)
        status = daemon.call("rpc.status")
        assert status["reloads"] == 1
        assert status["config"]["IDLE_TIMEOUT"] == 70
        assert status["workers"] == 3
        assert status["config"]["SOCKET_MODE"] == 0o660  # needs a restart: kept, and logged
        assert client.reply() == {"jsonrpc": "2.0", "id": 1, "result": 1}
    assert "reload_needs_restart" in daemon.log()


def test_sighup_with_a_broken_setting_keeps_the_old_ones(short_tmp, sqlite_url, launch):
    """A reload that fails validation is logged and changes nothing."""
    daemon = launch(
        str(short_tmp / "d.sock"), {"DATABASE_URL": sqlite_url}, settings={"IDLE_TIMEOUT": 50}
    )
    daemon.start()
    daemon.reconfigure(IDLE_TIMEOUT=-1)
    daemon.signal(signal.SIGHUP)
    poll(lambda: "reload_failed" in daemon.log())
    status = daemon.call("rpc.status")
    assert status["config"]["IDLE_TIMEOUT"] == 50
    assert status["reloads"] == 0


def test_sighup_lowering_the_message_limit_keeps_an_open_connection_working(
    short_tmp, sqlite_url, launch
):
    """A partial line longer than the new MAX_MESSAGE_BYTES completes and is answered."""
    daemon = launch(
        str(short_tmp / "d.sock"),
        {"DATABASE_URL": sqlite_url},
        settings={"MAX_MESSAGE_BYTES": 65536},
    )
    daemon.start()
    text = "x" * 10_000
    line = json.dumps({"jsonrpc": "2.0", "method": "testapp.echo", "params": [text], "id": 1})
    ping = json.dumps({"jsonrpc": "2.0", "method": "rpc.ping", "id": 0})
    with RawClient(daemon.socket) as client:
        # One write: the ping's reply proves the daemon has read the partial line too.
        client.send(ping.encode() + b"\n" + line[:8000].encode())
        assert client.reply()["result"] == "pong"
        daemon.reconfigure(MAX_MESSAGE_BYTES=1024)
        daemon.signal(signal.SIGHUP)
        poll(lambda: "reloaded" in daemon.log())
        client.send(line[8000:].encode() + b"\n")
        assert client.reply() == {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {"args": [text], "kwargs": {}},
        }
        with contextlib.suppress(BrokenPipeError):  # refused and closed while still sending
            client.request({"jsonrpc": "2.0", "method": "testapp.echo", "params": [text], "id": 2})
        assert client.reply()["error"]["code"] == -32003  # the next line has the new limit
