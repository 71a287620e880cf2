"""Client processes: one way to make the request per kind of server, and the measuring loops.

Every loop runs in a process of its own (forked by :mod:`bench.measure`), so the
clients never share the benchmark's interpreter or each other's GIL. Celery
and huey are imported only inside those processes, never in the parent, so no
Redis connection is ever shared across a fork.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import random
import socket
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

from bench.model import Endpoint
from socketsvc.client import call_with

Caller = Callable[[int], object]
TIMEOUT = 10.0


class RequestFailed(Exception):
    """The server answered, but not with the product's name."""


def _rpc(endpoint: Endpoint) -> Caller:
    path, method = endpoint.address, endpoint.method
    if method == "rpc.ping":
        return lambda pk: call_with(method, None, socket=path, timeout=TIMEOUT)
    return lambda pk: call_with(method, {"pk": pk}, socket=path, timeout=TIMEOUT)


# The trace the traced callers' calls belong to: one fixed, sampled parent span (W3C Trace
# Context), as if each call were made inside a traced request of the calling project.
TRACE_ID = 0x5B8AA5A2D2C872E8321CF37308D69DF2
PARENT_SPAN_ID = 0x051581BF3CB55C13


def _rpc_traced(endpoint: Endpoint) -> Caller:
    """As ``rpc``, with a sampled trace context made current in this (client) process first:
    ``call()`` then sends its ``traceparent``, and a daemon with tracing on continues that
    trace on every call. Only the OpenTelemetry API is needed here."""
    from opentelemetry import context, trace

    parent = trace.SpanContext(
        TRACE_ID,
        PARENT_SPAN_ID,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    return _rpc(endpoint)


def _http(endpoint: Endpoint) -> Caller:
    path = endpoint.address

    def get(pk: int) -> object:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            sock.sendall(
                b"GET /lookup/%d HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % pk
            )
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        response = b"".join(chunks)
        if not response.startswith(b"HTTP/1.1 200"):
            raise RequestFailed(response[:200].decode(errors="replace"))
        return response.partition(b"\r\n\r\n")[2]

    return get


def _celery(endpoint: Endpoint) -> Caller:
    from bench.celery_app import lookup

    return lambda pk: lookup.delay(pk).get(timeout=TIMEOUT)


def _huey(endpoint: Endpoint) -> Caller:
    from bench.huey_app import lookup

    return lambda pk: lookup(pk).get(blocking=True, timeout=TIMEOUT)


_FACTORIES: dict[str, Callable[[Endpoint], Caller]] = {
    "rpc": _rpc,
    "rpc-traced": _rpc_traced,
    "http": _http,
    "celery": _celery,
    "huey": _huey,
}


def make_caller(endpoint: Endpoint) -> Caller:
    """Return a function that makes one request for a primary key and returns the answer."""
    return _FACTORIES[endpoint.kind](endpoint)


def _warm(call: Caller, ids: list[int], count: int) -> None:
    for pk in ids[:count]:
        call(pk)


def latency_client(endpoint: Endpoint, ids: list[int], count: int, out: Queue[Any]) -> None:
    """Make *count* requests one after another; report each one's seconds and the failures."""
    call = make_caller(endpoint)
    _warm(call, ids, 20)
    picks = random.Random(1).choices(ids, k=count)  # noqa: S311 (not security)
    samples: list[float] = []
    failures = 0
    for pk in picks:
        started = time.perf_counter()
        try:
            call(pk)
        except Exception:
            failures += 1
            continue
        samples.append(time.perf_counter() - started)
    out.put((samples, failures))


def throughput_client(  # noqa: PLR0917
    endpoint: Endpoint,
    ids: list[int],
    seconds: float,
    seed: int,
    barrier: multiprocessing.synchronize.Barrier,
    out: Queue[Any],
) -> None:
    """After the start barrier, make requests for *seconds*; report how many succeeded."""
    call = make_caller(endpoint)
    _warm(call, ids, 5)
    rng = random.Random(seed)  # noqa: S311 (not security)
    done = failures = 0
    barrier.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        try:
            call(rng.choice(ids))
        except Exception:
            failures += 1
        else:
            done += 1
    out.put((done, failures))


def probe_client(endpoint: Endpoint, pk: int, seconds: float, out: Queue[Any]) -> None:
    """Retry one request until it succeeds or *seconds* pass; report the last error or None."""
    deadline = time.monotonic() + seconds
    error: str | None = "never tried"
    while time.monotonic() < deadline:
        try:
            call = make_caller(endpoint)
            call(pk)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
            continue
        error = None
        break
    out.put(error)
