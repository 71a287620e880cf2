"""OpenTelemetry's SDK with an in-memory exporter, in any process of the suite that sets
``TEST_OTEL=1`` (the daemon, a task client): what it traced, for a test to read. The
database drivers are instrumented too, as a project that traces its SQL does."""

from __future__ import annotations

import os
from typing import Any

_exporter: Any = None


def install() -> None:
    """Set a tracer provider that keeps every finished span in memory (once per process)."""
    global _exporter
    if _exporter is not None or os.environ.get("TEST_OTEL") != "1":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    _exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.mysqlclient import MySQLClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    MySQLClientInstrumentor().instrument()
    PsycopgInstrumentor().instrument()


def finished() -> list[dict[str, Any]]:
    """Every span this process finished: names, ids (hex), kind and attributes."""
    if _exporter is None:
        return []
    return [
        {
            "name": span.name,
            "trace_id": f"{span.context.trace_id:032x}",
            "span_id": f"{span.context.span_id:016x}",
            "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
            "kind": span.kind.name,
            "status": span.status.status_code.name,
            "attributes": dict(span.attributes or {}),
        }
        for span in _exporter.get_finished_spans()
    ]
