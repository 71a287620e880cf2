"""OpenTelemetry: one trace from the client's span into the daemon's call and task spans.

The client process (a task client, as a web process would be) and the daemon
each run OpenTelemetry's SDK with an in-memory exporter and the database
driver's instrumentation (``TEST_OTEL=1``). Inside a span of its own, the client
calls a handler and enqueues a task, each of which queries the database; the
daemon's span for the call and its span for the task's run carry the client's
trace id, with the client's span as their parent, the SQL they ran is traced
under them, and the daemon's log lines for them carry the same trace id.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.waiting import poll

VENDORS = ("mariadb", "postgresql")


def _named(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [span for span in spans if span["name"] == name]
    assert len(found) == 1, f"{name}: {spans}"
    return found[0]


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_the_daemons_call_and_task_spans_continue_the_clients_trace(
    clean_tasks, start_daemon, taskclient
):
    url = clean_tasks.url()
    daemon = start_daemon(url, env={"TEST_OTEL": "1"}, TASK_WORKERS=1)
    client = taskclient(url, daemon.socket, TEST_OTEL="1")
    traced = client.ask(
        "traced", task="query_sleep_query", args=[0], method="testapp.pause_then_query"
    )
    assert traced["answer"] == 0
    client.finished(traced["task_id"])
    trace_id, parent = traced["trace_id"], traced["span_id"]
    assert _named(traced["spans"], "web request")["span_id"] == parent

    spans = poll(
        lambda: (
            [s for s in daemon.call("testapp.spans") if s["name"].startswith("task ")]
            and daemon.call("testapp.spans")
        ),
        why=daemon.log,
    )
    call = _named(spans, "testapp.pause_then_query")
    assert (call["trace_id"], call["parent_span_id"], call["kind"]) == (trace_id, parent, "SERVER")
    assert call["attributes"]["rpc.method"] == "testapp.pause_then_query"
    assert call["attributes"]["rpc.system"] == "jsonrpc"
    assert call["attributes"]["socketsvc.outcome"] == "ok"
    assert isinstance(call["attributes"]["socketsvc.request_id"], int)
    task = _named(spans, "task tests.testapp.tasks.query_sleep_query")
    assert (task["trace_id"], task["parent_span_id"], task["kind"]) == (
        trace_id,
        parent,
        "CONSUMER",
    )
    assert task["attributes"]["socketsvc.task_id"] == traced["task_id"]
    assert task["attributes"]["messaging.destination.name"] == "default"
    assert task["attributes"]["socketsvc.attempt"] == 1
    assert task["attributes"]["socketsvc.outcome"] == "successful"
    # The SQL the handler and the task ran: the driver's spans, under the daemon's.
    for owner in (call, task):
        sql = [s for s in spans if s["parent_span_id"] == owner["span_id"]]
        assert sql, f"no SQL span under {owner['name']}: {spans}"
        assert all(s["kind"] == "CLIENT" and s["trace_id"] == trace_id for s in sql)
        assert {s["attributes"].get("db.system") for s in sql} <= {"mysql", "postgresql"}
    # The spans.call itself was traced too, in a trace of its own (no caller's span).
    assert all(s["trace_id"] != trace_id for s in spans if s["name"] == "testapp.spans")

    events = daemon.log_events()
    request = next(
        e
        for e in events
        if e.get("event") == "request" and e.get("method") == "testapp.pause_then_query"
    )
    assert (request["trace_id"], request["span_id"]) == (trace_id, call["span_id"])
    ran = next(
        e for e in events if e.get("event") == "task" and e.get("task_id") == task_id(traced)
    )
    assert (ran["trace_id"], ran["span_id"]) == (trace_id, task["span_id"])


def task_id(traced: dict[str, Any]) -> str:
    return str(traced["task_id"])


def test_a_failing_call_and_task_mark_their_spans_as_errors(sqlite_url, start_daemon, taskclient):
    """Without a caller's trace, the daemon starts its own; a handler error is the span's
    status, with the error's type."""
    daemon = start_daemon(sqlite_url, env={"TEST_OTEL": "1"})
    with pytest.raises(Exception, match="boom"):
        daemon.call("testapp.fail")
    spans = daemon.call("testapp.spans")
    failed = _named(spans, "testapp.fail")
    assert failed["parent_span_id"] is None
    assert failed["status"] == "ERROR"
    assert failed["attributes"]["socketsvc.outcome"] == "error"
    assert failed["attributes"]["rpc.jsonrpc.error_code"] == -32000
