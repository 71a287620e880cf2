"""Prometheus metrics of a real daemon with worker processes: what the test did, exactly.

A daemon with ``--processes 2`` answers calls (some failing, some to a method it
does not know), runs tasks (some failing, one whose worker process is killed
with SIGKILL mid-run) and recycles its workers (``MAX_REQUESTS``). Its
``/metrics`` text, from ``socketctl metrics``, from ``METRICS_LISTEN`` and from
the project's view, parses with ``prometheus_client``'s own parser, holds every
series once, and its counters equal the test's own count, the dead and
recycled processes' figures included.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
from collections import Counter as Tally
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.daemon import manage
from tests.harness.gate import Gate
from tests.harness.waiting import poll

VENDORS = ("mariadb", "postgresql")
TASKS = "tests.testapp.tasks."
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of *text*, by name and labels; fails on a series given twice."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"series given twice: {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def scrape(path: str) -> tuple[int, str, str]:
    connection = UnixHTTPConnection(path)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response.status, response.getheader("Content-Type") or "", body


def _worker_of(db: Any, task_id: str) -> int:
    rows = db.query(
        "SELECT w.pid FROM socketsvc_task t JOIN socketsvc_worker w ON w.id = t.claimed_by "
        "WHERE t.id = %s",
        [task_id],
        db="socketsvc_test",
    )
    return int(rows[0][0])


def _finished(db: Any, count: int) -> bool:
    rows = db.query(
        "SELECT COUNT(*) FROM socketsvc_task WHERE status IN ('SUCCESSFUL', 'FAILED')",
        db="socketsvc_test",
    )
    return bool(rows[0][0] == count)


def _restarts(daemon: Any) -> int:
    """Worker processes the master started again after they exited unasked (not those a
    successor being started replaced anyway)."""
    return sum(
        1
        for event in daemon.log_events()
        if event.get("event") == "worker_process_exited" and "restart_in" in event
    )


def _recycles(daemon: Any) -> int:
    return sum(
        1
        for event in daemon.log_events()
        if event.get("event") == "worker_process_started" and event.get("reason") == "max_requests"
    )


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_metrics_of_two_processes_count_exactly_what_happened(
    clean_tasks, start_daemon, taskclient, short_tmp
):
    url = clean_tasks.url()
    listen = str(short_tmp / "metrics.sock")
    daemon = start_daemon(
        url,
        "--processes",
        "2",
        TASK_WORKERS=2,
        MAX_REQUESTS=10,
        MAX_REQUESTS_JITTER=0,
        METRICS_LISTEN=listen,
    )
    gate = Gate(short_tmp / "gate")
    client = taskclient(url, daemon.socket)
    calls: Tally[tuple[str, str]] = Tally()
    for n in range(40):
        daemon.call("testapp.echo", n)
        calls["testapp.echo", "ok"] += 1
    for _ in range(6):
        with pytest.raises(Exception, match="boom"):
            daemon.call("testapp.fail")
        calls["testapp.fail", "handler_error"] += 1
    for name in ("no.such", "testapp.nope", "x" * 300):
        with pytest.raises(Exception, match="not found"):
            daemon.call(name)
        calls["(unknown)", "method_not_found"] += 1
    # A worker past MAX_REQUESTS asks for its successor at its next report (once a second).
    poll(lambda: _recycles(daemon) >= 1, why=daemon.log)
    inside = daemon.call("testapp.enqueue_adds", 7)
    calls["testapp.enqueue_adds", "ok"] += 1
    for _ in range(13):
        client.enqueue("add", 2, 3)
    for n in range(4):
        client.enqueue("fail", f"failure {n}")
    poll(lambda: _finished(clean_tasks, 7 + 13 + 4), timeout=60, why=daemon.log)
    # Killed while it runs nothing else: a run it had just recorded would not be counted
    # yet (the count follows the commit), and the kill is the test's only loss.
    held = client.enqueue("hold_then_mark", gate.path, "killed")
    gate.wait_for(1)
    victim = _worker_of(clean_tasks, held["id"])
    os.kill(victim, signal.SIGKILL)
    poll(lambda: _finished(clean_tasks, 7 + 13 + 4 + 1), timeout=60, why=daemon.log)
    # The killed worker process was started again, and both serve.
    poll(lambda: len(daemon.call("rpc.status").get("processes") or []) == 2, why=daemon.log)
    assert client.result(held["id"])["errors"][-1]["exception_class_path"] == (
        "socketsvc.tasks.WorkerLost"
    )
    assert len(inside) == 7

    # A recycle the scrape itself set off would be logged after it: read until none did.
    while True:
        recycles = _recycles(daemon)
        shown = manage("socketctl", "--socket", daemon.socket, "metrics")
        assert shown.returncode == 0, shown.stderr
        if _recycles(daemon) == recycles:
            break
    samples = parse(shown.stdout)
    # Calls: by method and outcome, the recycled workers' figures included.
    for (method, outcome), count in calls.items():
        assert value(samples, "socketsvc_requests_total", method=method, outcome=outcome) == count
        assert value(samples, "socketsvc_request_duration_seconds_count", method=method) == count
    # Tasks: started and finished by task and outcome; the lost run counted once, and failed.
    assert (
        value(samples, "socketsvc_tasks_enqueued_total", task=TASKS + "add", queue="default") == 7
    )
    for task, count, outcome in (("add", 20, "successful"), ("fail", 4, "failed")):
        labels = {"task": TASKS + task, "queue": "default"}
        assert value(samples, "socketsvc_tasks_started_total", **labels) == count
        assert value(samples, "socketsvc_tasks_finished_total", outcome=outcome, **labels) == count
        assert value(samples, "socketsvc_task_duration_seconds_count", **labels) == count
    killed = {"task": TASKS + "hold_then_mark", "queue": "default"}
    assert value(samples, "socketsvc_tasks_started_total", **killed) == 1
    assert value(samples, "socketsvc_tasks_finished_total", outcome="failed", **killed) == 1
    assert value(samples, "socketsvc_task_runs_lost_total", queue="default") == 1
    assert value(samples, "socketsvc_task_latency_seconds_count", queue="default") == 25
    # Processes: each restart (the killed one, unless a successor was already starting for
    # it) and each recycle the master logged, counted.
    assert value(samples, "socketsvc_process_restarts_total") == _restarts(daemon)
    assert recycles >= 1
    assert value(samples, "socketsvc_process_recycles_total", reason="max_requests") == recycles
    # Gauges of processes that are gone no longer count: in flight is this very call.
    assert value(samples, "socketsvc_requests_in_flight") == 1
    assert value(samples, "socketsvc_queue_depth", queue="default") == 0
    assert value(samples, "socketsvc_db_connects_total") > 0

    # The same figures over HTTP on a Unix socket (METRICS_LISTEN), from the master.
    status, content_type, body = scrape(listen)
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    over_http = parse(body)
    for (method, outcome), count in calls.items():
        assert value(over_http, "socketsvc_requests_total", method=method, outcome=outcome) == count
    scrapes = value(over_http, "socketsvc_requests_total", method="socketsvc.metrics", outcome="ok")
    assert scrapes >= 1
    assert value(over_http, "socketsvc_requests_in_flight") == 0


def test_metrics_off_say_so(sqlite_url, start_daemon):
    """METRICS=False: socketctl metrics fails with a clear message, the daemon serves on."""
    daemon = start_daemon(sqlite_url, METRICS=False)
    shown = manage("socketctl", "--socket", daemon.socket, "metrics")
    assert shown.returncode == 1
    assert "keeps no metrics" in json.loads(shown.stdout)["error"]["message"]
    assert daemon.call("rpc.ping") == "pong"


def test_a_bad_metrics_address_stops_the_start_saying_why(sqlite_url, launch, short_tmp):
    daemon = launch(
        str(short_tmp / "bad.sock"),
        {"DATABASE_URL": sqlite_url},
        settings={"METRICS_LISTEN": "127.0.0.1:notaport"},
    )
    code, output = daemon.run_to_exit()
    assert code != 0
    assert "METRICS_LISTEN" in output and "host:port" in output


def test_metrics_over_tcp_and_through_the_projects_view(sqlite_url, start_daemon, settings, client):
    """METRICS_LISTEN on 127.0.0.1 answers /metrics (404 elsewhere); the project's view,
    with the bearer token, gives the same daemon's figures."""
    from tests.harness.browser import free_port

    port = free_port()
    daemon = start_daemon(sqlite_url, METRICS_LISTEN=f"127.0.0.1:{port}")
    daemon.call("testapp.echo", 1)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    samples = parse(response.read().decode())
    assert response.status == 200
    assert value(samples, "socketsvc_requests_total", method="testapp.echo", outcome="ok") == 1
    connection.request("GET", "/elsewhere")
    assert connection.getresponse().status == 404
    connection.close()

    settings.SOCKETSVC = {"SOCKET": daemon.socket, "METRICS_TOKEN": "t" * 32}
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + "t" * 32)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    shown = parse(response.content.decode())
    assert value(shown, "socketsvc_requests_total", method="testapp.echo", outcome="ok") == 1
