"""The hot-path profile: where a socketsvc request spends its time, and what the options cost.

Run as part of ``bench/run.py`` (against its servers). The in-process parts
also run on their own with ``python bench/hotpath.py codec|handoff|lifecycle``
(lifecycle needs ``DATABASE_URL``); each prints JSON.

* codec: decoding a request line and encoding its reply with stdlib ``json``
  (as ``socketsvc.protocol`` does), ``orjson`` and ``msgspec``;
* hand-off: a job through ``queue.Queue`` to a worker thread and its result
  back through a deque and a wake-up socket, against alternatives;
* lifecycle: ``request_scope`` around the lookup with a persistent connection,
  pinging every request (``DB_CHECK_AFTER_IDLE=0``) or only after 1 s idle,
  against Django's ``close_old_connections()`` and no hygiene at all;
* py-spy: sampled stacks of the daemon's threads under 8 clients;
* variants of the daemon that ``bench/run.py`` can start without code changes
  (the request log level).
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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    from bench.run import Target
    from bench.stack import Stack

REQUEST = b'{"jsonrpc":"2.0","method":"bench.lookup","params":{"pk":417},"id":12345}'
REPLY = {"jsonrpc": "2.0", "id": 12345, "result": "Benchmark product 417"}


def _per_call_us(func: Callable[[], object], count: int, repeat: int = 5) -> float:
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
        "json (stdlib, as protocol.py)": _per_call_us(stdlib, 20000),
        "orjson": _per_call_us(with_orjson, 20000),
        "msgspec": _per_call_us(with_msgspec, 20000),
        "protocol.parse + encode (with validation)": _per_call_us(socketsvc_path, 20000),
        "LineFramer.feed (one line)": _per_call_us(lambda: framer.feed(line), 20000),
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
        "queue.Queue + deque + socketpair wake (socketsvc now)": statistics.median(
            _handoff(queue.Queue, True, count) for _ in range(3)
        ),
        "queue.SimpleQueue + deque + socketpair wake": statistics.median(
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
    from socketsvc.lifecycle import request_scope

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
        "lookup alone, no hygiene": _per_call_us(lambda: lookup(pk), count),
        "close_old_connections() around it (the bare server)": _per_call_us(django_cycle, count),
        "request_scope, DB_CHECK_AFTER_IDLE=0 (ping every request)": _per_call_us(
            scoped(0.0), count
        ),
        "request_scope, DB_CHECK_AFTER_IDLE=1.0": _per_call_us(scoped(1.0), count),
        "the ping alone (is_usable: SELECT 1)": _per_call_us(ping, count),
    }
    connection.settings_dict["CONN_MAX_AGE"] = 0
    connection.close()  # the next connection gets close_at = now: closed after each request
    results["request_scope, CONN_MAX_AGE=0 (connect per request)"] = _per_call_us(
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


def _in_subprocess(part: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, part],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- py-spy ------------------------------------------------------------------

# Buckets of the daemon's sampled stacks: first match (innermost frame outwards) wins.
_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("DB ping (is_usable)", ("is_usable (",)),
    ("MySQL connect", ("get_new_connection", "connect (MySQLdb", "Connect (")),
    ("SQL on the wire (cursor.execute)", ("execute (MySQLdb", "_query (MySQLdb", "query (MySQLdb")),
    ("ORM query building and row loading", ("django/db/models/",)),
    ("lifecycle: before/after request", ("socketsvc/lifecycle.py",)),
    ("request log line (structlog + logging)", ("structlog/", "logging/__init__")),
    ("JSON codec", ("json/",)),
    ("signature binding and type checks", ("inspect.py", "socketsvc/dispatch.py")),
    (
        "event loop (selectors, sockets, framing)",
        ("selectors.py", "socketsvc/server.py", "socketsvc/connection.py", "socketsvc/protocol.py"),
    ),
    ("hand-off (queue, threading)", ("queue.py", "threading.py", "socketsvc/workers.py")),
]


def pyspy(
    stack: Stack, target: Target, ids: list[int], seconds: float
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Sample the daemon under 8 clients; return % of busy samples per bucket and the top frames."""
    from bench.clients import throughput_client
    from bench.run import CTX, in_clients

    pid = stack.processes[target.server].pid
    raw = Path(tempfile.mkstemp(suffix=".txt", dir=stack.base)[1])
    barrier = CTX.Barrier(9)
    args = [(target.endpoint, ids, seconds + 1.0, seed, barrier) for seed in range(8)]
    load = threading.Thread(target=lambda: in_clients(throughput_client, args, seconds + 60))
    load.start()
    barrier.wait()
    time.sleep(0.5)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        check=True,
        capture_output=True,
        timeout=seconds + 60,
    )
    load.join()
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        frames = stack_text.split(";")
        count = int(count_text)
        total += count
        leaves[frames[-1]] += count
        for frame in reversed(frames):
            bucket = next((name for name, keys in _BUCKETS if any(k in frame for k in keys)), None)
            if bucket is not None:
                buckets[bucket] += count
                break
        else:
            buckets["other"] += count
    share = {name: 100 * n / total for name, n in buckets.most_common()} if total else {}
    top = [(frame, 100 * n / total) for frame, n in leaves.most_common(10)] if total else []
    return share, top


# -- daemon variants ---------------------------------------------------------


def daemon_variants(
    stack: Stack, persistent: Target, default: Target, ids: list[int]
) -> dict[str, tuple[float, float, float]]:
    """p50, 8-client req/s and idle RSS of daemons started with other options, vs the originals.

    Variants need no code change: request log lines off (``--log-level
    WARNING``), and glibc's malloc limited to 2 arenas (``MALLOC_ARENA_MAX=2``;
    by default every worker thread that allocates gets an arena of its own).
    """
    from bench.run import Target as RunTarget
    from bench.run import measure_latency, measure_throughput, percentile, wait_ready
    from bench.stack import rss_kib

    variants = {
        "socketsvc, --log-level WARNING": (
            ["--log-level", "WARNING"],
            stack.env(conn_max_age=60, health_checks=True),
        ),
        "socketsvc-0, MALLOC_ARENA_MAX=2": ([], {**stack.env(), "MALLOC_ARENA_MAX": "2"}),
    }
    targets = {persistent.name: persistent, default.name: default}
    for label, (extra, env) in variants.items():
        name = "variant-" + str(len(targets))
        path = stack.socket_path(name)
        argv = [sys.executable, "manage.py", "runsocketservice", "--socket", path, *extra]
        stack.spawn(name, argv, env)
        targets[label] = RunTarget(name, label, replace(default.endpoint, address=path), name)
    wait_ready(stack, list(targets.values()), ids[0])
    figures: dict[str, list[tuple[float, float, float]]] = {label: [] for label in targets}
    for _ in range(3):
        for label, each in targets.items():
            samples, _ = measure_latency(each, ids, 600)
            rate, _ = measure_throughput(each, ids, 8, 1.5)
            time.sleep(0.3)
            rss = rss_kib(stack.processes[each.server].pid) / 1024
            figures[label].append((percentile(samples, 0.5) * 1000, rate, rss))
    return {
        label: (
            statistics.median(p for p, _, _ in values),
            statistics.median(r for _, r, _ in values),
            statistics.median(m for _, _, m in values),
        )
        for label, values in figures.items()
    }


def _client_connection(path: str) -> dict[str, float]:
    """Microseconds per rpc.ping: call() (connect per call) against one kept connection."""
    from socketsvc.client import invoke

    per_call = _per_call_us(lambda: invoke("rpc.ping", None, socket=path, timeout=5), 2000, 3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        reader = sock.makefile("rb")
        line = b'{"jsonrpc":"2.0","method":"rpc.ping","id":1}\n'

        def kept() -> object:
            sock.sendall(line)
            return json.loads(reader.readline())

        kept_us = _per_call_us(kept, 2000, 3)
    return {"call(): new connection per call": per_call, "one connection kept open": kept_us}


# -- the report --------------------------------------------------------------


def _rows(values: dict[str, float], digits: int = 1) -> list[list[str]]:
    return [[name, f"{value:.{digits}f}"] for name, value in values.items()]


def run(stack: Stack, persistent: Target, default: Target, ids: list[int]) -> dict[str, Any]:
    """Profile the hot path against the running servers; return sections for the report."""
    env = {**stack.env(conn_max_age=60), "BENCH_PK": str(ids[0])}
    codec_us = _in_subprocess("codec", env)
    handoff_us = _in_subprocess("handoff", env)
    lifecycle_us = _in_subprocess("lifecycle", env)
    client_us = _client_connection(stack.socket_path("socketsvc"))
    share_60, top_60 = pyspy(stack, persistent, ids, 4.0)
    share_0, _ = pyspy(stack, default, ids, 4.0)
    ping = replace(default, endpoint=replace(default.endpoint, method="rpc.ping"))
    share_ping, top_ping = pyspy(stack, ping, ids, 4.0)
    variants = daemon_variants(stack, persistent, default, ids)
    buckets = list(dict.fromkeys([*share_60, *share_0, *share_ping]))
    sections = [
        {
            "title": "Where the daemon's threads spend their busy time (py-spy, 8 clients)",
            "text": "Share of sampled non-idle stacks, by the innermost frame that falls in a "
            "bucket. Loop thread and worker threads together.",
            "header": ["bucket", "% socketsvc", "% socketsvc-0 (CONN_MAX_AGE=0)", "% rpc.ping"],
            "rows": [
                [b, *(f"{share.get(b, 0):.1f}" for share in (share_60, share_0, share_ping))]
                for b in buckets
            ],
        },
        {
            "title": "Hottest leaf frames (py-spy, socketsvc)",
            "text": "Innermost frame of each sample.",
            "header": ["frame", "% of samples"],
            "rows": [[f"`{frame}`", f"{pct:.1f}"] for frame, pct in top_60],
        },
        {
            "title": "Hottest leaf frames (py-spy, rpc.ping)",
            "text": "Innermost frame of each sample; no handler, no database.",
            "header": ["frame", "% of samples"],
            "rows": [[f"`{frame}`", f"{pct:.1f}"] for frame, pct in top_ping],
        },
        {
            "title": "DB lifecycle per request (in-process, persistent connection)",
            "text": "Microseconds per lookup on one thread, best of 5 x 1,000.",
            "header": ["hygiene", "µs per request"],
            "rows": _rows(lifecycle_us),
        },
        {
            "title": "JSON codec per request (decode the request line, encode the reply)",
            "text": "Microseconds, best of 5 x 20,000.",
            "header": ["codec", "µs"],
            "rows": _rows(codec_us, 2),
        },
        {
            "title": "Hand-off to a worker thread and back",
            "text": "Microseconds per no-op job, one at a time, median of 3 x 5,000.",
            "header": ["mechanism", "µs per job"],
            "rows": _rows(handoff_us),
        },
        {
            "title": "Client connection per call",
            "text": "Microseconds per `rpc.ping` to the socketsvc daemon, best of 3 x 2,000.",
            "header": ["client", "µs per call"],
            "rows": _rows(client_us),
        },
        {
            "title": "Daemon options: the request log line, malloc arenas",
            "text": "The same lookup against daemons started with other options (no code "
            "change), interleaved with the originals, medians of 3 rounds.",
            "header": ["daemon", "p50 ms", "req/s, 8 clients", "idle RSS MiB"],
            "rows": [[k, f"{p:.3f}", f"{r:.0f}", f"{m:.1f}"] for k, (p, r, m) in variants.items()],
        },
    ]
    return {
        "intro": "Measured in the same run, against the same servers and database.",
        "sections": sections,
        "raw": {
            "codec": codec_us,
            "handoff": handoff_us,
            "lifecycle": lifecycle_us,
            "client": client_us,
            "pyspy_60": share_60,
            "pyspy_0": share_0,
            "pyspy_ping": share_ping,
            "log_level": variants,
        },
    }


if __name__ == "__main__":
    parts: dict[str, Callable[[], dict[str, float]]] = {
        "codec": codec,
        "handoff": handoff,
        "lifecycle": lifecycle,
    }
    print(json.dumps(parts[sys.argv[1]]()))
