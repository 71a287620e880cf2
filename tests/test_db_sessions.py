"""The daemon holds no more database sessions than it needs, and none after it stops."""

from __future__ import annotations

import threading
import time

from tests.waiting import poll


def test_no_session_held_while_idle_with_conn_max_age_0(mariadb, start_daemon):
    """With CONN_MAX_AGE=0 every request's connection is closed before the reply is sent."""
    daemon = start_daemon(mariadb.url(), conn_max_age="0")
    for _ in range(5):
        daemon.call("testapp.write_note", text="max-age-0")
        assert mariadb.sessions() == []


def test_persistent_sessions_bounded_by_workers_and_age_out(mariadb, start_daemon):
    """With CONN_MAX_AGE>0 there is at most one session per worker, closed once past its age."""
    workers = 3
    daemon = start_daemon(mariadb.url(), "--workers", str(workers), conn_max_age="2")
    seen_max = 0
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            daemon.call("testapp.pause_then_query", seconds=0.05)

    callers = [threading.Thread(target=load) for _ in range(workers + 2)]
    for caller in callers:
        caller.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            seen_max = max(seen_max, len(mariadb.sessions()))
            time.sleep(0.05)
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)
    assert 1 <= seen_max <= workers
    # Idle workers close their connections once CONN_MAX_AGE has passed.
    poll(lambda: mariadb.sessions() == [], timeout=10)
    assert daemon.call("rpc.ping") == "pong"


def test_no_session_left_after_shutdown(mariadb, start_daemon):
    """SIGTERM closes every session the daemon held."""
    daemon = start_daemon(mariadb.url(), "--workers", "4", conn_max_age="none")
    threads = [
        threading.Thread(
            target=daemon.call, args=("testapp.pause_then_query",), kwargs={"seconds": 0.3}
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(mariadb.sessions()) >= 1
    assert daemon.stop() == 0
    poll(lambda: mariadb.sessions() == [], timeout=10)
