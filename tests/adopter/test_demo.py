"""The demo the README starts: migrate, daemon, calls to the shop's handlers, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from socketsvc.procfs import pid_alive
from tests.harness.daemon import REPO, manage, manage_env
from tests.harness.waiting import poll

DEMO = {"DJANGO_SETTINGS_MODULE": "project.settings"}
NOT_FROM_THE_TESTS = ("DATABASE_URL", "SOCKETSVC_SOCKET")


def test_demo_calls_handlers_that_read_and_write_the_shop(short_tmp):
    """rundemo --once migrates SQLite, sells, restocks through the daemon, prints it, and exits 0."""
    done = manage(
        "rundemo",
        "--once",
        env={**DEMO, "SOCKETSVC_VAR_DIR": str(short_tmp)},
        unset=NOT_FROM_THE_TESTS,
    )
    assert done.returncode == 0, done.stderr
    assert "database: sqlite3" in done.stdout
    assert "$ socketctl call shop.sell sku=MUG-01 quantity=2" in done.stdout
    assert '"summary": "Restocked 3 product(s), 40 unit(s) in all"' in done.stdout
    assert (short_tmp / "db.sqlite3").exists()
    assert not (short_tmp / "socketsvc.sock").exists()


# What the demo prints as the database in use, by the test servers' vendor.
SHOWN_AS = {"mysql": "mysql", "postgresql": "postgresql"}


def test_demo_runs_from_a_database_url(database, short_tmp):
    """DATABASE_URL=mysql://... or postgres://... (the README's table): the demo migrates an
    empty database on that server, sells and restocks through the daemon, and exits 0."""
    name = f"demo_{short_tmp.name.lower()}"
    database.query(f"CREATE DATABASE {name}")
    try:
        done = manage(
            "rundemo",
            "--once",
            env={**DEMO, "SOCKETSVC_VAR_DIR": str(short_tmp), "DATABASE_URL": database.url(name)},
            unset=("SOCKETSVC_SOCKET",),
        )
        assert done.returncode == 0, done.stderr
        assert f"database: {SHOWN_AS[database.vendor]}" in done.stdout
        assert '"summary": "Restocked 3 product(s), 40 unit(s) in all"' in done.stdout
        assert database.query("SELECT COUNT(*) FROM shop_product", db=name)[0][0] > 0
    finally:
        drop = " WITH (FORCE)" if database.vendor == "postgresql" else ""
        database.query(f"DROP DATABASE {name}{drop}")


def _ctrl_c_as_in_a_terminal() -> None:
    """In the demo's process: Ctrl-C (SIGINT) does what it does at a terminal, even when the
    suite itself runs with SIGINT ignored (a background job of a script inherits that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_demo(short_tmp: Path, **popen: Any) -> subprocess.Popen[str]:
    """Start ``rundemo`` (daemon and web server) and return once it says it is running."""
    with socket.socket() as probe:  # a port of its own: demos of parallel tests never share
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "rundemo", "--port", str(port)],
        cwd=REPO,
        env=manage_env({**DEMO, "SOCKETSVC_VAR_DIR": str(short_tmp)}, NOT_FROM_THE_TESTS),
        stdout=subprocess.PIPE,
        stderr=open(short_tmp / "demo.err", "wb"),
        text=True,
        start_new_session=True,
        **{"preexec_fn": _ctrl_c_as_in_a_terminal, **popen},
    )
    shown: list[str] = []

    def prompted() -> bool:
        assert demo.stdout is not None
        shown.append(demo.stdout.readline())
        return "Press Ctrl-C to stop." in shown[-1]

    try:
        poll(
            prompted,
            timeout=60,
            interval=0,
            why=lambda: "".join(shown) + (short_tmp / "demo.err").read_text(errors="replace"),
        )
    except BaseException:
        os.killpg(demo.pid, signal.SIGKILL)
        raise
    return demo


def test_demo_runs_until_ctrl_c_and_stops_the_daemon(short_tmp):
    """Without --once the demo keeps the daemon serving until Ctrl-C, then stops it cleanly."""
    demo = start_demo(short_tmp)
    try:
        assert (short_tmp / "socketsvc.sock").exists()
        # Ctrl-C reaches the whole foreground process group, daemon included.
        os.killpg(demo.pid, signal.SIGINT)
        try:
            code = demo.wait(30)
        except subprocess.TimeoutExpired:
            err = (short_tmp / "demo.err").read_text(errors="replace")
            raise AssertionError(f"the demo did not stop within 30 s:\n{err[-6000:]}") from None
        assert code == 0
        assert not (short_tmp / "socketsvc.sock").exists()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell does for a background job


def test_sigterm_stops_a_demo_started_in_the_background(short_tmp):
    """Started as a background job (SIGINT ignored, inherited by its children), SIGTERM to
    rundemo stops the daemon and the web server, and rundemo exits."""
    demo = start_demo(short_tmp, preexec_fn=_ignore_sigint)
    children: list[int] = []
    try:
        children = _children(demo.pid)
        assert len(children) == 2  # the daemon and runserver

        demo.send_signal(signal.SIGTERM)

        assert demo.wait(60) == 0
        assert [child for child in children if pid_alive(child)] == []
        assert not (short_tmp / "socketsvc.sock").exists()
    finally:
        for pid in [demo.pid, *children]:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_fresh_clone_starts_the_daemon_with_the_readmes_command(short_tmp, launch):
    """`manage.py runsocketservice` on the demo settings, with no project/var yet and no
    database: the daemon starts, answers, and says the migrations are missing."""
    var_dir = short_tmp / "var"  # absent, as in a fresh clone
    daemon = launch(
        str(var_dir / "socketsvc.sock"),
        {**DEMO, "SOCKETSVC_VAR_DIR": str(var_dir)},
        socket_option=False,
        unset=NOT_FROM_THE_TESTS,
    )
    daemon.start()
    assert daemon.call("rpc.ping") == "pong"
    poll(lambda: "unapplied_migrations" in daemon.log(), why=daemon.log)
