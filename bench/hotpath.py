"""The hot-path profile: where a socketsvc request spends its time, and what the options cost.

Run as part of ``python -m bench`` (against its servers), after the rounds:

* the in-process parts of :mod:`bench.inprocess` (codec, hand-off, DB
  lifecycle), each in a subprocess of its own;
* py-spy: sampled stacks of the daemon's threads under 8 clients;
* variants of the daemon that can be started without code changes (the
  request log level, malloc arenas);
* the client library: ``call()`` against a raw request line on one kept connection.
"""

from __future__ import annotations

import collections
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.clients import throughput_client
from bench.inprocess import per_call_us
from bench.measure import in_clients, measure_latency, measure_throughput
from bench.model import CTX, Target, percentile
from bench.servers import manage, wait_ready
from bench.stack import Stack, rss_kib

# -- in-process parts --------------------------------------------------------


def _in_subprocess(part: str, env: dict[str, str]) -> dict[str, float]:
    """Run one part of :mod:`bench.inprocess` in a fresh interpreter; return its figures."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", part],
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
        argv = manage("runsocketservice", "--socket", path, *extra)
        stack.spawn(name, argv, env)
        targets[label] = Target(name, label, replace(default.endpoint, address=path), name)
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
    """Microseconds per rpc.ping: call() (its kept connection) against a raw line on one."""
    from socketsvc.client import call_with

    per_call = per_call_us(lambda: call_with("rpc.ping", None, socket=path, timeout=5), 2000, 3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        reader = sock.makefile("rb")
        line = b'{"jsonrpc":"2.0","method":"rpc.ping","id":1}\n'

        def kept() -> object:
            sock.sendall(line)
            return json.loads(reader.readline())

        kept_us = per_call_us(kept, 2000, 3)
    return {
        "call() (kept connection; id, encode, reply validation)": per_call,
        "raw request line on one kept connection, json.loads": kept_us,
    }


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
            "title": "The client library per call",
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
