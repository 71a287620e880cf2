"""OpenTelemetry traces from the caller into the handler and the task (``socketsvc[otel]``).

Only the OpenTelemetry API is used, and only if it is installed: the project
brings its SDK, exporter and instrumentations (Django's, the database
driver's). Without the API, or without an SDK configured, every function here
is a cheap no-op.

- :func:`outgoing` gives the W3C ``traceparent``/``tracestate`` of the current
  span: ``call()``/``notify()`` send them as members of the JSON-RPC request,
  ``enqueue()`` stores them with the task.
- :func:`call_span` and :func:`task_span` continue that trace in the daemon: a
  span per call (kind SERVER) and per task run (kind CONSUMER), current while
  the handler or task runs, so the database spans of the project's own
  instrumentation nest under them.
- :func:`log_ids` puts ``trace_id``/``span_id`` on the daemon's log lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - the extra is not installed
    trace = None  # type: ignore[assignment]

# The request members (and task row keys) that carry a trace: W3C Trace Context's names.
FIELDS = ("traceparent", "tracestate")
# Longer values are not a trace context (tracestate is at most 512 characters).
MAX_LENGTH = 1024
_SCOPE = "socketsvc"


def installed() -> bool:
    """Return True if the OpenTelemetry API is there."""
    return trace is not None


def active() -> bool:
    """Return True if the project set a tracer provider (an SDK): spans are worth making."""
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def outgoing() -> dict[str, str] | None:
    """Return the trace context of the current span to send along, or None (no span)."""
    if trace is None:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    found = {key: carrier[key] for key in FIELDS if key in carrier}
    return found or None


def _context(carrier: MutableMapping[str, Any] | None) -> Any:
    if not carrier:
        return None
    return propagate.extract({key: str(value) for key, value in carrier.items()})


@contextmanager
def _span(name: str, kind: Any, carrier: Any, attributes: dict[str, Any]) -> Iterator[Any]:
    tracer = trace.get_tracer(_SCOPE)
    with tracer.start_as_current_span(
        name,
        context=_context(carrier),
        kind=kind,
        attributes={key: value for key, value in attributes.items() if value is not None},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


@contextmanager
def call_span(method: str, request_id: int, carrier: Any) -> Iterator[Any]:
    """Run a call inside a span continuing the caller's trace (None when not tracing)."""
    if not active():
        yield None
        return
    with _span(
        method,
        SpanKind.SERVER,
        carrier,
        {
            "rpc.system": "jsonrpc",
            "rpc.method": method,
            "rpc.jsonrpc.version": "2.0",
            "socketsvc.request_id": request_id,
            "process.pid": os.getpid(),
        },
    ) as span:
        yield span


def call_ended(span: Any, error_code: int | None, error_type: str | None) -> None:
    """Say on *span* how the call went."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("socketsvc.outcome", "ok" if error_code is None else "error")
    if error_code is not None:
        span.set_attribute("rpc.jsonrpc.error_code", error_code)
        if error_type:
            span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR))


@contextmanager
def task_span(task: str, queue: str, attempt: int, task_id: str, carrier: Any) -> Iterator[Any]:
    """Run a task inside a span continuing the trace it was enqueued in (None when not
    tracing)."""
    if not active():
        yield None
        return
    with _span(
        f"task {task}",
        SpanKind.CONSUMER,
        carrier,
        {
            "socketsvc.task": task,
            "socketsvc.task_id": task_id,
            "messaging.destination.name": queue,
            "socketsvc.attempt": attempt,
            "process.pid": os.getpid(),
        },
    ) as span:
        yield span


def task_ended(span: Any, outcome: str, error_type: str | None) -> None:
    """Say on *span* how the run went."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("socketsvc.outcome", outcome)
    if outcome != "successful":
        if error_type:
            span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR))


def current_ids() -> tuple[str, str] | None:
    """Return the current span's trace and span ids (hex), or None."""
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def log_ids(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """A structlog processor: ``trace_id`` and ``span_id`` of the current span, if any."""
    if "trace_id" not in event_dict:
        ids = current_ids()
        if ids is not None:
            event_dict["trace_id"], event_dict["span_id"] = ids
    return event_dict


def current_ended(outcome: str, error_type: str | None) -> None:
    """Say on the current span (a task's) how its run went."""
    if trace is not None:
        task_ended(trace.get_current_span(), outcome, error_type)
