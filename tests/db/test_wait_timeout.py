"""The seed's bug: a daemon idle past MySQL's wait_timeout must keep answering."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.harness.daemon import REPO, manage_env
from tests.harness.waiting import poll

WAIT_TIMEOUT = 2


def idle_past_wait_timeout(server, since: float) -> None:
    """Wait until the server has reaped every idle session and wait_timeout has passed.

    Idling is what is tested, so the second wait is for the clock itself.
    """
    poll(lambda: not server.sessions(), timeout=30, interval=0.2)
    remaining = since + WAIT_TIMEOUT + 1 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


@pytest.mark.parametrize("health_checks", [False, True], ids=["hc-off", "hc-on"])
@pytest.mark.parametrize("max_age", ["0", "60", "none"], ids=lambda v: f"max-age-{v}")
def test_requests_after_idling_past_wait_timeout_all_succeed(
    database, start_daemon, max_age, health_checks
):
    """Every request succeeds after the daemon idled longer than wait_timeout."""
    database.set_wait_timeout(WAIT_TIMEOUT)
    # One worker thread: the requests after the idle time reuse the very thread (and
    # connection) the first ones used, whichever thread would otherwise be free first.
    daemon = start_daemon(
        database.url(), "--workers", "1", conn_max_age=max_age, health_checks=health_checks
    )
    marker = f"idle-{max_age}-{health_checks}"
    assert daemon.call("testapp.write_note", text=marker) >= 1
    first_session = daemon.call("testapp.connection_id")
    last_request = time.monotonic()

    idle_past_wait_timeout(database, last_request)

    results = [daemon.call("testapp.connection_id") for _ in range(3)]
    assert daemon.call("testapp.write_note", text=marker) >= 2
    assert daemon.call("testapp.count_notes", text=marker) == 2
    assert first_session not in results
    status = daemon.call("rpc.status")
    assert status["errors"] == 0
    if max_age != "0":
        assert status["db_reconnects"] >= 1


@pytest.mark.parametrize("lifecycle", [False, True], ids=["plain-loop", "request-scope"])
def test_plain_loop_fails_after_idling_and_request_scope_does_not(database, lifecycle):
    """A loop without the lifecycle hits 2006 after idling; the same loop in request_scope does not."""
    database.set_wait_timeout(WAIT_TIMEOUT)
    env = manage_env({"DATABASE_URL": database.url(), "TEST_CONN_MAX_AGE": "0"})
    args = [sys.executable, "tests/harness/plain_loop.py", str(WAIT_TIMEOUT + 1.5)]
    if lifecycle:
        args.append("--lifecycle")
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    if lifecycle:
        assert results == [{"ok": True}] * 3
    else:
        assert results[0] == {"ok": True}
        assert [result["ok"] for result in results[1:]] == [False, False]
        assert {result["code"] for result in results[1:]} <= set(database.idle_dropped_codes)
