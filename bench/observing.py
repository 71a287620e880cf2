"""What observing a call costs the daemon: Prometheus metrics and OpenTelemetry tracing.

    .venv/bin/python -m bench.observing              # prints the table (about a minute)
    .venv/bin/python -m bench.observing --docs docs  # and puts it into docs/benchmarks.md

Four daemons (``manage.py runsocketservice``, one process, the main run's
``socketsvc`` settings: ``CONN_MAX_AGE=60`` with ``CONN_HEALTH_CHECKS``) on a
throwaway MariaDB differ only in what they observe (:mod:`bench.settings`):
metrics off or on (``BENCH_METRICS``: every call counted into
``prometheus_client``'s multiprocess files), tracing off or on (``BENCH_OTEL``:
the OpenTelemetry SDK, a span per call handed to a batch processor whose
exporter drops it). The clients of a tracing daemon send a sampled trace
context with every call, so each call continues a trace, as it does when the
calling project traces its own requests.

Each daemon gets the main run's call (``bench.lookup``: one product by primary
key through the ORM), the daemons interleaved, their order rotated each round:
the p50 of one client's calls in a row; then 8 client processes for a few
seconds, their requests/s and the daemon's CPU per call (schedstat, all its
threads, divided by the calls answered). Each figure is the median over the
rounds. ``python -m bench`` runs it too (the smoke run: one round, a few calls).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.measure import measure_latency, measure_throughput
from bench.model import Endpoint, Target, fmt, markdown_table, percentile
from bench.probe import standalone
from bench.servers import manage, wait_ready
from bench.stack import DB_NAME, Stack, cpu_ns
from tests.harness.docpage import put_section

BEGIN, END = "<!-- bench:observing -->", "<!-- /bench:observing -->"
# Metrics on may cost at most this much of a call's CPU with metrics off.
TARGET = 1.05


@dataclass(frozen=True)
class Variant:
    """One daemon: its name (socket, log) and what it observes."""

    name: str
    label: str
    metrics: bool
    tracing: bool


VARIANTS = (
    Variant("observe-none", "metrics off, tracing off", metrics=False, tracing=False),
    Variant("observe-metrics", "metrics on, tracing off", metrics=True, tracing=False),
    Variant("observe-tracing", "metrics off, tracing on", metrics=False, tracing=True),
    Variant("observe-both", "metrics on, tracing on", metrics=True, tracing=True),
)


@dataclass(frozen=True)
class Amount:
    """How much to measure: rounds, calls in a row (p50), seconds under *clients* clients."""

    rounds: int
    calls: int
    seconds: float
    clients: int = 8


FULL = Amount(rounds=3, calls=600, seconds=2.0)
SMOKE = Amount(rounds=1, calls=30, seconds=0.3)


@dataclass
class Figures:
    """One variant's figures, one value per round."""

    variant: Variant
    p50_ms: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    failures: int = 0

    def p50(self) -> float | None:
        """Return the median p50 over the rounds, in ms."""
        return _median(self.p50_ms)

    def rate(self) -> float | None:
        """Return the median requests/s over the rounds."""
        return _median(self.rps)

    def cpu(self) -> float | None:
        """Return the median CPU per call over the rounds, in µs."""
        return _median(self.cpu_us)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Observed:
    """Everything measured: the variants' figures (in :data:`VARIANTS` order), and how much."""

    figures: list[Figures]
    amount: Amount

    def cpu_ratio(self, figures: Figures) -> float | None:
        """Return a variant's CPU per call over that of metrics off, tracing off."""
        base, mine = self.figures[0].cpu(), figures.cpu()
        return None if base is None or mine is None or base == 0 else mine / base

    def failures(self) -> int:
        """Return how many calls failed, over every variant and round."""
        return sum(each.failures for each in self.figures)


# -- the daemons ---------------------------------------------------------------


def start(stack: Stack, variant: Variant) -> Target:
    """Start one variant's daemon; return the target its clients call."""
    path = stack.socket_path(variant.name)
    env = {
        **stack.env(conn_max_age=60, health_checks=True),
        "BENCH_METRICS": "1" if variant.metrics else "0",
        "BENCH_OTEL": "1" if variant.tracing else "0",
    }
    stack.spawn(variant.name, manage("runsocketservice", "--socket", path), env)
    # The clients of a tracing daemon call from inside a trace (bench.clients).
    kind = "rpc-traced" if variant.tracing else "rpc"
    return Target(variant.name, variant.label, Endpoint(kind, path), variant.name)


def product_ids(stack: Stack) -> list[int]:
    """Return the primary keys of the benchmark's products (the database is started)."""
    rows = stack.db.query("SELECT id FROM shop_product WHERE sku LIKE 'BENCH-%'", db=DB_NAME)
    return [int(row[0]) for row in rows]


# -- measuring -----------------------------------------------------------------


def measure_once(
    stack: Stack, target: Target, ids: list[int], amount: Amount, into: Figures
) -> None:
    """Measure one daemon once: the p50 of calls in a row, then requests/s and CPU per call
    under load; add the figures to *into*."""
    samples, failures = measure_latency(target, ids, amount.calls)
    into.failures += failures
    if samples:
        into.p50_ms.append(percentile(samples, 0.5) * 1000)
    pid = stack.processes[target.server].pid
    before = cpu_ns(pid)
    rate, failed = measure_throughput(target, ids, amount.clients, amount.seconds)
    spent_ns = cpu_ns(pid) - before
    into.failures += failed
    into.rps.append(rate)
    if rate:
        into.cpu_us.append(spent_ns / 1000 / (rate * amount.seconds))


def run(stack: Stack, ids: list[int], amount: Amount = FULL) -> Observed:
    """Start the four daemons, measure them interleaved, stop them; return the figures."""
    targets: list[Target] = []
    try:
        for variant in VARIANTS:
            targets.append(start(stack, variant))
        wait_ready(stack, targets, ids[0])
        figures = {t.name: Figures(v) for t, v in zip(targets, VARIANTS, strict=True)}
        for round_no in range(amount.rounds):
            shift = round_no % len(targets)
            print(f"observation: round {round_no + 1}/{amount.rounds}", flush=True)
            for target in targets[shift:] + targets[:shift]:
                measure_once(stack, target, ids, amount, figures[target.name])
                print(f"  {target.label:<26} {_progress(figures[target.name])}", flush=True)
    finally:
        stack.stop_servers([variant.name for variant in VARIANTS])
    return Observed(list(figures.values()), amount)


def _progress(figures: Figures) -> str:
    """Return a round's figures (the last ones added) as a line of progress."""
    p50 = figures.p50_ms[-1] if figures.p50_ms else 0.0
    cpu = figures.cpu_us[-1] if figures.cpu_us else 0.0
    return f"p50 {p50:6.3f} ms  {figures.rps[-1]:7.0f}/s  {cpu:6.1f} µs CPU per call"


# -- the report ----------------------------------------------------------------


def rows(observed: Observed) -> list[list[str]]:
    """Return the table's rows, one per variant."""
    return [
        [
            each.variant.label,
            fmt(each.p50(), 3),
            fmt(each.rate(), 0),
            fmt(each.cpu(), 1),
            fmt(observed.cpu_ratio(each), 2),
        ]
        for each in observed.figures
    ]


def verdict(observed: Observed) -> str:
    """Return the line that says whether metrics stay within the target."""
    ratio = observed.cpu_ratio(observed.figures[1])
    if ratio is None:
        return "metrics on, tracing off: not measured"
    met = "met" if ratio <= TARGET else "missed"
    return (
        f"metrics on, tracing off: CPU per call {100 * ratio:.1f}% of metrics off "
        f"(target ≤ {100 * TARGET:.0f}%): {met}"
    )


def spread(observed: Observed) -> str:
    """Return the line that says how far the rounds of the baseline's CPU per call spread
    (what a difference between the variants must exceed to be more than noise)."""
    base = observed.figures[0]
    median = base.cpu()
    if median is None or len(base.cpu_us) < 2:
        return ""
    low, high = min(base.cpu_us), max(base.cpu_us)
    return (
        f"{base.variant.label}: CPU per call {low:.0f} to {high:.0f} µs over the rounds "
        f"({100 * (low / median - 1):+.0f}% to {100 * (high / median - 1):+.0f}% of its median)"
    )


def text(observed: Observed) -> str:
    """Return the table, the verdict, the baseline's spread and, if any, the failed calls."""
    header = [
        "daemon",
        "p50 ms",
        f"req/s, {observed.amount.clients} clients",
        "server CPU µs per call",
        "CPU vs metrics off, tracing off",
    ]
    lines = [markdown_table(header, rows(observed)), "", verdict(observed)]
    if spread(observed):
        lines += ["", spread(observed)]
    if observed.failures():
        lines.append(f"{observed.failures()} calls failed: the figures are not clean")
    return "\n".join(lines)


def section(observed: Observed) -> str:
    """Return the section of benchmarks.md."""
    amount = observed.amount
    return (
        f"{BEGIN}\n## Observation: metrics and tracing per call\n\n"
        "What the daemon's Prometheus metrics (`METRICS`: every call counted into "
        "`prometheus_client`'s multiprocess files) and OpenTelemetry tracing (the SDK "
        "set in the daemon: a span per call, handed to a `BatchSpanProcessor` whose "
        "exporter drops it) cost per call. Four daemons, one process each with the main "
        "table's `socketsvc` settings, differ only in those two switches; the clients of "
        "a tracing daemon send a sampled `traceparent` with every call, so each call "
        "continues a trace. The call is the main table's lookup (one product by primary "
        f"key through the ORM, a throwaway MariaDB; {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}); {amount.rounds} interleaved rounds, medians: p50 "
        f"of {amount.calls} calls "
        f"in a row, requests/s of {amount.clients} client processes over "
        f"{amount.seconds:g} s, and the daemon's CPU (all its threads) over those calls "
        "divided by their number. The target: metrics cost at most 5% more CPU per call. "
        "The last line says how far the first daemon's rounds spread: a difference "
        "between daemons smaller than that is noise. "
        f"Measured by `python -m bench.observing`.\n\n{text(observed)}\n{END}"
    )


def write_section(observed: Observed, docs: Path) -> None:
    """Put the section into ``benchmarks.md`` (replacing the old one)."""
    put_section(docs / "benchmarks.md", section(observed), BEGIN, END, "Benchmarks")


def main(argv: list[str] | None = None) -> int:
    """Run the observation benchmark alone; return 1 if a call failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.observing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--docs", metavar="DIR", help="put the table into DIR/benchmarks.md")
    parser.add_argument("--smoke", action="store_true", help="one round, a few calls")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {FULL.rounds})")
    options = parser.parse_args(argv)
    amount = SMOKE if options.smoke else FULL
    if options.rounds:
        amount = replace(amount, rounds=options.rounds)
    found: list[Observed] = []

    def measure(stack: Stack) -> Observed:
        found.append(run(stack, product_ids(stack), amount))
        return found[-1]

    def write(observed: Observed, docs: Path) -> None:
        if observed.failures():
            print("calls failed: benchmarks.md left as it was")
            return
        write_section(observed, docs)
        print(f"wrote the observation section of {docs}/benchmarks.md")

    standalone(measure, text, write, options.docs)
    return 1 if found and found[0].failures() else 0


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.exit(main())
