"""--daemonize with python-daemon for hosts without systemd: pidfile, logs, refusal rules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from socketsvc import call
from socketsvc.procfs import pid_alive
from tests.harness.daemon import Daemon
from tests.harness.waiting import poll


def daemonizing(short_tmp, sqlite_url, *args, env=None) -> Daemon:
    """A runsocketservice --daemonize --pidfile command; its output file is the inherited stderr."""
    return Daemon(
        str(short_tmp / "d.sock"),
        {"DATABASE_URL": sqlite_url, **(env or {})},
        "--daemonize",
        "--pidfile",
        str(short_tmp / "d.pid"),
        *args,
    )


@pytest.fixture
def daemon_pids():
    """Pids of detached daemons, killed at teardown if still running."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_stopped(pid: int) -> None:
    poll(lambda: not pid_alive(pid), timeout=30)


def test_daemonize_detaches_and_keeps_socket_and_log(short_tmp, sqlite_url, daemon_pids):
    """The parent exits 0; the pidfile names the live daemon; it serves and its log lines arrive."""
    log_file = short_tmp / "d.log"
    code, output = daemonizing(short_tmp, sqlite_url, "--log-file", str(log_file)).run_to_exit()
    assert code == 0, output
    pid = poll(
        lambda: int((short_tmp / "d.pid").read_text()) if (short_tmp / "d.pid").exists() else 0
    )
    daemon_pids.append(pid)
    assert pid_alive(pid)
    path = str(short_tmp / "d.sock")
    poll(lambda: os.path.exists(path))
    assert call("rpc.status", socket=path)["pid"] == pid
    assert call("testapp.add", 20, 22, socket=path) == 42
    poll(lambda: '"method": "testapp.add"' in log_file.read_text())
    assert f'"pid": {pid}' in log_file.read_text()  # the "listening" line, after detaching
    # Files it creates are not world-readable (umask 027).
    created = short_tmp / "d.sock.lock"
    assert created.stat().st_mode & 0o007 == 0
    os.kill(pid, signal.SIGTERM)
    wait_stopped(pid)
    assert not (short_tmp / "d.pid").exists()
    assert not os.path.exists(path)


def test_daemonize_without_log_file_keeps_stderr(short_tmp, sqlite_url, daemon_pids):
    """Without --log-file the daemon keeps writing to the stderr it was started with."""
    parent = daemonizing(short_tmp, sqlite_url)
    code, output = parent.run_to_exit()
    assert code == 0, output
    pid = poll(lambda: (short_tmp / "d.pid").exists() and int((short_tmp / "d.pid").read_text()))
    daemon_pids.append(pid)
    call("testapp.add", 1, 2, socket=str(short_tmp / "d.sock"), timeout=20)
    poll(lambda: '"method": "testapp.add"' in parent.log())
    os.kill(pid, signal.SIGTERM)
    wait_stopped(pid)


def test_stale_pidfile_is_ignored(short_tmp, sqlite_url, daemon_pids):
    """A pidfile naming a dead process does not block the start."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (short_tmp / "d.pid").write_text(f"{dead.pid}\n")
    code, output = daemonizing(
        short_tmp, sqlite_url, "--log-file", str(short_tmp / "d.log")
    ).run_to_exit()
    assert code == 0, output

    def new_pid() -> int:
        recorded = int((short_tmp / "d.pid").read_text())
        return recorded if recorded != dead.pid else 0

    pid = poll(new_pid)
    daemon_pids.append(pid)
    assert call("rpc.ping", socket=str(short_tmp / "d.sock"), timeout=20) == "pong"
    os.kill(pid, signal.SIGTERM)
    wait_stopped(pid)


def test_live_pidfile_is_refused(short_tmp, sqlite_url):
    """A pidfile naming a running process stops the start with a clear message."""
    (short_tmp / "d.pid").write_text(f"{os.getpid()}\n")
    code, output = daemonizing(short_tmp, sqlite_url).run_to_exit()
    assert code != 0
    assert f"names a running process (pid {os.getpid()})" in output
    assert (short_tmp / "d.pid").read_text() == f"{os.getpid()}\n"
    assert not (short_tmp / "d.sock").exists()


def test_never_daemonizes_under_systemd(short_tmp, sqlite_url, launch):
    """Started by systemd (INVOCATION_ID set), --daemonize is ignored: the process stays in front."""
    daemon = launch(
        str(short_tmp / "d.sock"),
        {"DATABASE_URL": sqlite_url, "INVOCATION_ID": "0123456789abcdef"},
        "--daemonize",
    ).start()
    assert daemon.call("rpc.status")["pid"] == daemon.pid
    assert daemon.process.poll() is None
    assert daemon.stop() == 0
