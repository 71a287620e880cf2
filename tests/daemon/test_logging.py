"""Structured logs: JSON lines off a TTY, console on a TTY, one canonical line per request."""

from __future__ import annotations

import json
import os
import pty
import signal
import threading
from collections import defaultdict

import pytest

from socketsvc import HandlerError
from tests.harness.daemon import RawClient
from tests.harness.waiting import poll


def test_every_line_is_json_and_interleaved_clients_keep_their_request_ids(sqlite_daemon):
    """Two clients' requests interleave; every line is JSON and each carries only its own request_id."""

    def client(tag: str) -> None:
        with RawClient(sqlite_daemon.socket) as raw:
            for n in range(5):
                raw.request(
                    {
                        "jsonrpc": "2.0",
                        "method": "testapp.log_steps",
                        "params": {"tag": f"{tag}{n}", "steps": 3},
                        "id": n,
                    }
                )
            for _ in range(5):
                raw.reply()

    threads = [threading.Thread(target=client, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    poll(lambda: sqlite_daemon.log().count('"method": "testapp.log_steps"') >= 40)

    lines = sqlite_daemon.log().splitlines()
    events = [json.loads(line) for line in lines]  # every line parses
    assert all(len(line) < 48 * 1024 for line in lines)
    tags_by_request: dict[int, set[str]] = defaultdict(set)
    canonical = [e for e in events if e["event"] == "request"]
    for event in events:
        if event["event"] == "handler_step":
            tags_by_request[event["request_id"]].add(event["tag"])
    assert len(tags_by_request) == 10
    assert all(len(tags) == 1 for tags in tags_by_request.values())
    assert len({e["request_id"] for e in canonical}) == len(canonical) == 10
    for line in canonical:
        assert set(line) >= {
            "request_id",
            "method",
            "peer_pid",
            "peer_uid",
            "duration_ms",
            "outcome",
            "db_connects",
            "db_reconnects",
            "timestamp",
            "level",
        }
        assert line["peer_uid"] == os.getuid()
        assert "params" not in line  # request bodies are not logged by default


def test_an_exception_is_one_line_with_a_structured_traceback(sqlite_daemon):
    """A failing handler yields one JSON line whose exception field is a structured traceback."""
    try:
        sqlite_daemon.call("testapp.fail", "kaput")
    except HandlerError:
        pass
    line = poll(
        lambda: next(
            (e for e in sqlite_daemon.log_events() if e.get("error_type") == "RuntimeError"),
            None,
        )
    )
    assert line["event"] == "request"
    assert line["outcome"] == "error"
    trace = line["exception"]
    assert trace[0]["exc_type"] == "RuntimeError"
    assert trace[0]["exc_value"] == "kaput"
    assert any(frame["name"] == "fail" for frame in trace[0]["frames"])


def test_django_and_stdlib_loggers_use_the_same_renderer(sqlite_daemon):
    """Lines from stdlib loggers (Django's included) are JSON with the same fields."""
    sqlite_daemon.call("testapp.stdlib_log", "hello from stdlib")
    line = poll(
        lambda: next(
            (e for e in sqlite_daemon.log_events() if e["event"] == "hello from stdlib"), None
        )
    )
    assert line["logger"] == "django.testapp"
    assert line["level"] == "warning"
    assert "timestamp" in line
    assert "request_id" in line  # the request's context reaches stdlib lines too


def test_console_format_on_a_tty(sock_path, sqlite_url, launch):
    """On a terminal the daemon logs human-readable console lines, not JSON."""
    primary, secondary = pty.openpty()
    daemon = launch(sock_path, {"DATABASE_URL": sqlite_url}).start(wait=False, output=secondary)
    os.close(secondary)
    output = b""
    try:
        while b"listening" not in output:
            chunk = os.read(primary, 4096)
            assert chunk, "no output on the terminal"
            output += chunk
    finally:
        daemon.stop()
        os.close(primary)
    first = output.decode(errors="replace").splitlines()[0]
    assert not first.lstrip().startswith("{")


def test_the_projects_logging_handlers_see_a_failing_handlers_exception(
    start_daemon, sqlite_url, short_tmp
):
    """LOGGING's own handlers stay and get the daemon's records, traceback included; its
    console handler is replaced by the daemon's, so no line is written twice."""
    captured = short_tmp / "captured.jsonl"
    daemon = start_daemon(sqlite_url, env={"TEST_LOG_CAPTURE": str(captured)})
    with pytest.raises(HandlerError) as caught:
        daemon.call("testapp.fail", "kaput")
    request_id = caught.value.data["request_id"]
    assert daemon.call("testapp.stdlib_log", "from the stdlib") == "from the stdlib"

    def records() -> list[dict]:
        if not captured.exists():
            return []
        return [json.loads(line) for line in captured.read_text().splitlines()]

    failure = poll(lambda: next((r for r in records() if r["request_id"] == request_id), None))
    assert failure["logger"] == "socketsvc.request"
    assert failure["level"] == "ERROR"
    assert failure["exc_type"] == "RuntimeError"
    assert "testapp.fail" in failure["message"]
    poll(lambda: any(r["message"] == "from the stdlib" for r in records()))
    # The project's console handler comes before the daemon's: a duplicate would be there first.
    stderr_lines = poll(
        lambda: [e for e in daemon.log_events() if e.get("request_id") == request_id]
    )
    assert len(stderr_lines) == 1


def test_a_log_that_cannot_be_written_costs_no_request(start_daemon, sqlite_url):
    """With the log on a full device every write fails, yet each call is answered (one worker)."""
    daemon = start_daemon(sqlite_url, "--workers", "1", "--log-file", "/dev/full")
    for n in range(5):
        assert daemon.call("testapp.add", n, 1) == n + 1
    with pytest.raises(HandlerError):
        daemon.call("testapp.fail", "kaput")
    assert daemon.call("testapp.add", 2, 2) == 4


def test_sighup_reopens_the_log_file(short_tmp, sqlite_url, launch):
    """After the log file is moved away, SIGHUP makes the daemon write to a new one at the path."""
    log_file = short_tmp / "daemon.log"
    daemon = launch(
        str(short_tmp / "d.sock"), {"DATABASE_URL": sqlite_url}, "--log-file", str(log_file)
    )
    daemon.start()
    poll(lambda: log_file.exists() and "listening" in log_file.read_text())
    log_file.rename(short_tmp / "daemon.log.1")
    daemon.signal(signal.SIGHUP)
    poll(lambda: log_file.exists() and "reloaded" in log_file.read_text())
    daemon.call("testapp.add", 1, 1)
    poll(lambda: '"method": "testapp.add"' in log_file.read_text())
