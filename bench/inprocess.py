"""The hot path's parts timed in-process: the JSON codec, the hand-off, the DB lifecycle.

Part of the hot-path profile (:mod:`bench.hotpath` runs each part in a
subprocess of its own); each also runs alone and prints JSON::

    python -m bench.inprocess codec|handoff|lifecycle    # lifecycle needs DATABASE_URL

* codec: decoding a request line and encoding its reply with stdlib ``json``
  (as ``socketsvc.protocol`` does), ``orjson`` and ``msgspec``;
* hand-off: a job through a queue (``queue.SimpleQueue``, as the pool, or
  ``queue.Queue``) to a worker thread and its result back through a deque and a
  wake-up socket (as the handback), against an Event with no selector;
* lifecycle: ``request_scope`` around the lookup with a persistent connection,
  pinging every request (``DB_CHECK_AFTER_IDLE=0``) or only after 1 s idle,
  against Django's ``close_old_connections()`` and no hygiene at all.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import selectors
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

REQUEST = b'{"jsonrpc":"2.0","method":"bench.lookup","params":{"pk":417},"id":12345}'
REPLY = {"jsonrpc": "2.0", "id": 12345, "result": "Benchmark product 417"}


def per_call_us(func: Callable[[], object], count: int, repeat: int = 5) -> float:
    """Return the best-of-*repeat* mean microseconds of *func*."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(count):
            func()
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


# -- codec -------------------------------------------------------------------


def codec() -> dict[str, float]:
    """Microseconds to decode REQUEST and encode REPLY, per library and through socketsvc."""
    import msgspec
    import orjson

    from socketsvc import protocol

    def reject(name: str) -> None:
        raise ValueError(name)

    def stdlib() -> bytes:
        json.loads(REQUEST.decode("utf-8"), parse_constant=reject)
        return json.dumps(REPLY, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"

    def with_orjson() -> bytes:
        orjson.loads(REQUEST)
        return orjson.dumps(REPLY) + b"\n"

    decoder, encoder = msgspec.json.Decoder(), msgspec.json.Encoder()

    def with_msgspec() -> bytes:
        decoder.decode(REQUEST)
        return encoder.encode(REPLY) + b"\n"

    def socketsvc_path() -> bytes:
        protocol.parse(REQUEST)
        return protocol.encode(protocol.result_response(12345, "Benchmark product 417"))

    framer = protocol.LineFramer(1 << 20)
    line = REQUEST + b"\n"
    return {
        "json (stdlib, as protocol.py)": per_call_us(stdlib, 20000),
        "orjson": per_call_us(with_orjson, 20000),
        "msgspec": per_call_us(with_msgspec, 20000),
        "protocol.parse + encode (with validation)": per_call_us(socketsvc_path, 20000),
        "LineFramer.feed (one line)": per_call_us(lambda: framer.feed(line), 20000),
    }


# -- hand-off ----------------------------------------------------------------


def _handoff(make_queue: Callable[[], Any], wake: bool, count: int) -> float:
    """Microseconds per job: loop thread -> worker -> result deque -> loop thread."""
    jobs = make_queue()
    done: collections.deque[int] = collections.deque()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ)
    finished = threading.Event()

    def worker() -> None:
        while (job := jobs.get()) is not None:
            done.append(job)
            if wake:
                wake_w.send(b"\0")
            else:
                finished.set()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    started = time.perf_counter()
    for job in range(count):
        jobs.put(job)
        if wake:
            while not done:
                selector.select(1.0)
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096)
        else:
            finished.wait()
            finished.clear()
        done.popleft()
    elapsed = time.perf_counter() - started
    jobs.put(None)
    thread.join()
    selector.close()
    wake_r.close()
    wake_w.close()
    return elapsed / count * 1e6


def handoff() -> dict[str, float]:
    """Compare ways to hand a job to a worker thread and get the result back to the loop."""
    count = 5000
    return {
        "queue.Queue + deque + socketpair wake": statistics.median(
            _handoff(queue.Queue, True, count) for _ in range(3)
        ),
        "queue.SimpleQueue + deque + socketpair wake (socketsvc)": statistics.median(
            _handoff(queue.SimpleQueue, True, count) for _ in range(3)
        ),
        "queue.SimpleQueue, threading.Event back (no selector)": statistics.median(
            _handoff(queue.SimpleQueue, False, count) for _ in range(3)
        ),
    }


# -- lifecycle ---------------------------------------------------------------


def lifecycle() -> dict[str, float]:
    """Microseconds per lookup with each kind of connection hygiene (persistent connection)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.db import close_old_connections, connection

    from bench.handlers import lookup
    from socketsvc.db.lifecycle import request_scope

    count = 1000
    pk = int(os.environ.get("BENCH_PK", "1"))
    lookup(pk)

    def scoped(threshold: float) -> Callable[[], object]:
        def run() -> object:
            with request_scope(threshold):
                return lookup(pk)

        return run

    def django_cycle() -> object:
        close_old_connections()
        try:
            return lookup(pk)
        finally:
            close_old_connections()

    def ping() -> object:
        return connection.is_usable()

    persistent = connection.settings_dict["CONN_MAX_AGE"]
    results = {
        "lookup alone, no hygiene": per_call_us(lambda: lookup(pk), count),
        "close_old_connections() around it (the bare server)": per_call_us(django_cycle, count),
        "request_scope, DB_CHECK_AFTER_IDLE=0 (ping every request)": per_call_us(
            scoped(0.0), count
        ),
        "request_scope, DB_CHECK_AFTER_IDLE=1.0": per_call_us(scoped(1.0), count),
        "the ping alone (is_usable: SELECT 1)": per_call_us(ping, count),
    }
    connection.settings_dict["CONN_MAX_AGE"] = 0
    connection.close()  # the next connection gets close_at = now: closed after each request
    results["request_scope, CONN_MAX_AGE=0 (connect per request)"] = per_call_us(
        scoped(0.0), count // 4
    )
    connection.settings_dict["CONN_MAX_AGE"] = persistent
    connection.close()
    results.update(_pyinstrument_split(scoped(0.0), count))
    return results


_SPLIT = {
    "before_request": "pyinstrument: before_request (its ping included)",
    "is_usable": "pyinstrument: the ping (is_usable)",
    "lookup": "pyinstrument: the handler (ORM + SQL)",
    "after_request": "pyinstrument: after_request",
}


def _pyinstrument_split(func: Callable[[], object], count: int) -> dict[str, float]:
    """Profile *count* calls with pyinstrument; return microseconds per call in key functions."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0001)
    profiler.start()
    for _ in range(count):
        func()
    profiler.stop()
    root = profiler.last_session.root_frame() if profiler.last_session else None
    totals: dict[str, float] = dict.fromkeys(_SPLIT, 0.0)

    def walk(frame: Any, inside: frozenset[str]) -> None:
        name = frame.function
        if name in totals and name not in inside:
            totals[name] += frame.time
            inside |= {name}
        for child in frame.children:
            walk(child, inside)

    if root is not None:
        walk(root, frozenset())
    return {label: totals[name] / count * 1e6 for name, label in _SPLIT.items()}


if __name__ == "__main__":
    parts: dict[str, Callable[[], dict[str, float]]] = {
        "codec": codec,
        "handoff": handoff,
        "lifecycle": lifecycle,
    }
    print(json.dumps(parts[sys.argv[1]]()))
