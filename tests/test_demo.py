"""The demo the README starts: migrate, daemon, calls to the shop's handlers, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.daemon import REPO
from tests.waiting import poll


def demo_env(var_dir) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    env.pop("DATABASE_URL", None)
    env["SOCKETSVC_VAR_DIR"] = str(var_dir)
    return env


def test_demo_calls_handlers_that_read_and_write_the_shop(short_tmp):
    """rundemo --once migrates SQLite, sells, restocks through the daemon, prints it, and exits 0."""
    done = subprocess.run(
        [sys.executable, "manage.py", "rundemo", "--once"],
        cwd=REPO,
        env=demo_env(short_tmp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "database: sqlite3" in done.stdout
    assert "$ socketctl call shop.sell sku=MUG-01 quantity=2" in done.stdout
    assert '"summary": "Restocked 3 product(s), 40 unit(s) in all"' in done.stdout
    assert (short_tmp / "db.sqlite3").exists()
    assert not (short_tmp / "socketsvc.sock").exists()


def test_demo_runs_until_ctrl_c_and_stops_the_daemon(short_tmp):
    """Without --once the demo keeps the daemon serving until Ctrl-C, then stops it cleanly."""
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "rundemo"],
        cwd=REPO,
        env=demo_env(short_tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert demo.stdout is not None
        poll(lambda: "Press Ctrl-C to stop." in demo.stdout.readline(), timeout=60, interval=0)
        assert (short_tmp / "socketsvc.sock").exists()
        # Ctrl-C reaches the whole foreground process group, daemon included.
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(30) == 0
        assert not (short_tmp / "socketsvc.sock").exists()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
