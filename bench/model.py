"""What a run is made of: the things measured, how much to measure, what came out.

The bottom of the benchmark's one-way layout (model -> measure -> servers ->
taskbench -> hotpath -> ``python -m bench``; taskreport and report read only
this and :mod:`bench.goals`): dataclasses, shared constants and pure helpers,
no I/O.
"""

from __future__ import annotations

import multiprocessing
import statistics
from dataclasses import dataclass, field
from typing import Any

# How client processes are started (:func:`bench.measure.in_clients`).
CTX = multiprocessing.get_context("fork")


@dataclass(frozen=True)
class Endpoint:
    """How to reach one server: ``kind`` is rpc, rpc-traced (rpc inside a sampled trace), http,
    celery or huey."""

    kind: str
    address: str = ""
    method: str = "bench.lookup"


@dataclass
class Target:
    """One thing measured: a server process (or tree) and how to call it."""

    name: str
    label: str
    endpoint: Endpoint
    server: str
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, figure: str, value: float) -> None:
        """Record one round's value of a figure."""
        self.samples.setdefault(figure, []).append(value)

    def median(self, figure: str) -> float | None:
        """Return the median of a figure over the rounds, or None if never measured."""
        values = self.samples.get(figure)
        return statistics.median(values) if values else None


@dataclass
class Plan:
    """How much to measure."""

    rounds: int
    latency_count: int
    throughput_seconds: float
    clients: tuple[int, ...]
    idle_connections: int
    kill_cycles: int
    timeout_cycles: int
    full: bool
    # The task benchmark (bench.taskbench): rounds, enqueue -> started samples
    # per round (fewer for a worker that polls once a second), tasks per
    # throughput measurement, producer processes.
    task_rounds: int
    task_latency_count: int
    task_latency_count_polled: int
    task_count: int
    task_producers: tuple[int, ...]


FULL = Plan(
    rounds=5,
    latency_count=600,
    throughput_seconds=1.5,
    clients=(1, 8),
    idle_connections=10_000,
    kill_cycles=3,
    timeout_cycles=2,
    full=True,
    task_rounds=3,
    task_latency_count=150,
    task_latency_count_polled=30,
    task_count=500,
    task_producers=(1, 8),
)
SMOKE = Plan(
    rounds=1,
    latency_count=30,
    throughput_seconds=0.3,
    clients=(1, 8),
    idle_connections=100,
    kill_cycles=1,
    timeout_cycles=0,
    full=False,
    task_rounds=1,
    task_latency_count=10,
    task_latency_count_polled=5,
    task_count=40,
    task_producers=(1, 8),
)


@dataclass
class TaskSystem:
    """One task system of the task benchmark: its workers, and what was measured against them.

    ``backend`` is the ``BENCH_TASKS`` switch of :mod:`bench.settings`;
    ``poll`` is how long its workers sleep between polls when idle (0 when
    they are woken, or poll without pause); ``workers`` says how many run.
    """

    name: str
    label: str
    backend: str
    workers: str
    poll: float = 0.0
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    enqueue_ms: list[float] = field(default_factory=list)

    def add(self, figure: str, value: float) -> None:
        """Record one round's value of a figure."""
        self.samples.setdefault(figure, []).append(value)

    def median(self, figure: str) -> float | None:
        """Return the median of a figure over the rounds, or None if never measured."""
        values = self.samples.get(figure)
        return statistics.median(values) if values else None

    def latency(self, q: float) -> float | None:
        """Return the *q* quantile of enqueue -> started over every round, in ms."""
        return percentile(self.latencies, q) if self.latencies else None

    def failures(self) -> int:
        """Return how many tasks failed or never finished, over every round."""
        return int(sum(self.samples.get("failures", [])))


@dataclass
class TaskResults:
    """Everything the task benchmark measured."""

    systems: list[TaskSystem]
    rounds: int
    latency_count: int
    latency_count_polled: int
    count: int
    producers: tuple[int, ...]
    elapsed: float
    load: tuple[float, float]  # the 1-minute load average at the start and at the end

    def system(self, name: str) -> TaskSystem | None:
        """Return the system called *name*, if it was measured."""
        return next((s for s in self.systems if s.name == name), None)

    def median(self, name: str, figure: str) -> float | None:
        """Return a system's median figure, or None."""
        system = self.system(name)
        return None if system is None else system.median(figure)

    def latency(self, name: str, q: float) -> float | None:
        """Return a system's enqueue -> started quantile in ms, or None."""
        system = self.system(name)
        return None if system is None else system.latency(q)


@dataclass
class Results:
    """Everything one run measured."""

    targets: list[Target]
    idle: dict[str, dict[str, float]]
    resilience: dict[str, dict[str, int]]
    profile: dict[str, Any] | None
    rounds: int
    latency_count: int
    throughput_seconds: float
    idle_connections: int
    elapsed: float
    load_at_start: tuple[float, float, float]
    tasks: TaskResults | None = None

    def target(self, name: str) -> Target | None:
        """Return the target called *name*, if it was measured."""
        return next((t for t in self.targets if t.name == name), None)

    def median(self, name: str, figure: str) -> float | None:
        """Return a target's median figure, or None."""
        target = self.target(name)
        return None if target is None else target.median(figure)


@dataclass
class Check:
    """One target of the issue, and where the run landed."""

    goal: str
    measured: str
    ratio: float | None
    limit: float
    at_most: bool

    @property
    def met(self) -> bool | None:
        """Return whether the target is met (None if not measured)."""
        if self.ratio is None:
            return None
        return self.ratio <= self.limit if self.at_most else self.ratio >= self.limit


# -- pure helpers ------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Return the *q* quantile (0..1) of *samples*, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ratio(a: float | None, b: float | None) -> float | None:
    """Return *a* / *b*, or None if either is missing or *b* is 0."""
    return None if a is None or b is None or b == 0 else a / b


def fmt(value: float | None, digits: int = 2) -> str:
    """Return a figure with *digits* decimals, or "-" if it was not measured."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Return a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    """Return a table as aligned plain text, for the terminal."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
