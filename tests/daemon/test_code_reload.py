"""``runsocketservice --reload`` starts the daemon again when the code changes, and a
method the caller's code has but the running daemon lacks says to restart or reload."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from socketsvc import MethodNotFound, ServiceUnavailable
from socketsvc.client import call_with
from socketsvc.methods.registry import registry
from tests.harness.waiting import poll

HANDLERS = """
from socketsvc import handler


@handler
def hello() -> str:
    return {greeting!r}
"""
ADDED = """

@handler
def added() -> str:
    return "new"
"""


def write_handlers(app: Path, greeting: str, extra: str = "") -> None:
    path = app / "handlers.py"
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(textwrap.dedent(HANDLERS.format(greeting=greeting)) + extra)
    # A change the watcher sees even on a file system with coarse timestamps.
    stamp = max(time.time(), before + 2)
    os.utime(path, (stamp, stamp))


@pytest.fixture
def liveapp(short_tmp: Path) -> Path:
    app = short_tmp / "code" / "liveapp"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    write_handlers(app, "one")
    return app


def test_a_code_change_restarts_the_daemon_with_the_new_handlers(launch, sqlite_url, liveapp):
    env = {"DATABASE_URL": sqlite_url, "PYTHONPATH": str(liveapp.parent)}
    daemon = launch(
        str(liveapp.parent.parent / "r.sock"), {**env, "TEST_EXTRA_APPS": "liveapp"}, "--reload"
    ).start()
    assert daemon.call("liveapp.hello") == "one"
    first_pid = daemon.call("rpc.status")["pid"]
    assert first_pid != daemon.process.pid  # the daemon is a child of the reloading process
    with pytest.raises(MethodNotFound):
        daemon.call("liveapp.added")

    write_handlers(liveapp, "two", ADDED)

    def answers_two() -> bool:
        try:
            return daemon.call("liveapp.hello", timeout=2) == "two"
        except ServiceUnavailable:
            return False  # between the old daemon's drain and the new one's start

    poll(answers_two, timeout=30, why=daemon.log)
    assert daemon.call("liveapp.added") == "new"
    assert daemon.call("rpc.status")["pid"] != first_pid
    assert "code_changed" in daemon.log()

    daemon.process.send_signal(signal.SIGTERM)  # to the reloading process: it stops the daemon
    assert daemon.process.wait(30) == 0
    assert not os.path.exists(daemon.socket)


def test_a_failed_start_waits_for_the_fix(launch, sqlite_url, liveapp):
    """A syntax error in a handler: the daemon cannot start; fixed, it starts by itself."""
    (liveapp / "handlers.py").write_text("def broken(:\n")
    env = {"DATABASE_URL": sqlite_url, "PYTHONPATH": str(liveapp.parent)}
    daemon = launch(
        str(liveapp.parent.parent / "r.sock"), {**env, "TEST_EXTRA_APPS": "liveapp"}, "--reload"
    ).start(wait=False)
    poll(lambda: "daemon_exited" in daemon.log(), timeout=30, why=daemon.log)

    write_handlers(liveapp, "fixed")

    poll(lambda: os.path.exists(daemon.socket), timeout=30, why=daemon.log)
    assert daemon.call("liveapp.hello") == "fixed"
    daemon.process.send_signal(signal.SIGINT)
    assert daemon.process.wait(30) == 0


def test_method_not_found_says_to_restart_when_the_callers_code_has_it(sqlite_daemon):
    """The web process's code has a handler the daemon was started without."""

    def only_here() -> str:
        return "never served"

    registry.add(only_here, name="test.only_here")
    try:
        with pytest.raises(MethodNotFound) as missing:
            call_with("test.only_here", socket=sqlite_daemon.socket)
    finally:
        registry._methods.pop("test.only_here")
    message = str(missing.value)
    assert "not in the running daemon" in message
    assert "restart it" in message and "--reload" in message
    assert "test_code_reload" in message  # where the caller's code defines it


def test_method_not_found_stays_plain_for_a_method_nobody_has(sqlite_daemon):
    with pytest.raises(MethodNotFound) as missing:
        call_with("test.nowhere", socket=sqlite_daemon.socket)
    assert str(missing.value) == "Method not found: 'test.nowhere'"
