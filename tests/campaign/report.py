"""The campaign's table: what ran, what was done to it, and the violations of each invariant."""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.campaign.checker import History, Verdict, check
from tests.campaign.nemesis import KINDS, Fault
from tests.campaign.workload import Record
from tests.harness.docpage import put_section

BEGIN, END = "<!-- campaign:{db} -->", "<!-- /campaign:{db} -->"
# Violations listed per invariant (the count is always whole).
SHOWN = 5


@dataclass
class Outcome:
    vendor: str
    seed: int
    duration: float
    elapsed: float
    settled: bool
    # Each task left READY or RUNNING, its claim, claimant and runs (empty once settled).
    unsettled: list[str]
    history: History
    record: Record
    faults: list[Fault]
    faults_failed: int
    events: list[dict[str, Any]]
    verdicts: list[Verdict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.verdicts = check(self.history)

    @property
    def clean(self) -> bool:
        """No violation, everything settled, and every fault injected as drawn."""
        return (
            self.settled and not self.faults_failed and not any(v.violations for v in self.verdicts)
        )

    def recycles(self) -> int:
        return sum(
            1
            for e in self.events
            if e.get("event") == "worker_process_started" and e.get("reason") == "max_requests"
        )

    def declared_lost(self) -> int:
        return sum(1 for e in self.events if e.get("event") == "tasks_of_lost_daemons")


def _versions() -> str:
    import django

    return f"Python {platform.python_version()}, Django {django.get_version()}"


def _counts(counter: Counter[str], order: tuple[str, ...] = ()) -> str:
    keys = [k for k in order if k in counter] + sorted(k for k in counter if k not in order)
    return ", ".join(f"{key} {counter[key]}" for key in keys) or "none"


def rows(outcome: Outcome) -> list[tuple[str, str]]:
    """The table's rows: (what, figures)."""
    history = outcome.history
    kinds: Counter[str] = Counter(e.kind for e in outcome.record.enqueued)
    kinds["periodic"] = sum(len(ids) for ids in history.slots.values())
    statuses: Counter[str] = Counter(task.status for task in history.tasks.values())
    killed = sum(1 for run in history.runs if run.ended is None)
    faults: Counter[str] = Counter(fault.kind for fault in outcome.faults)
    calls: Counter[str] = Counter(call.outcome for call in history.calls)
    cancels: Counter[str] = Counter(c.status_after for c in outcome.record.cancels)
    took = sorted(e.took for e in outcome.record.enqueued) or [0.0]
    enqueues = (
        f"{len(outcome.record.enqueued)} (p50 {took[len(took) // 2] * 1000:.1f} ms, max "
        f"{took[-1] * 1000:.0f} ms), {outcome.record.enqueue_failures} failed"
    )
    return [
        ("enqueue() calls", enqueues),
        ("tasks by kind", _counts(kinds)),
        ("tasks by final status", _counts(statuses, ("SUCCESSFUL", "FAILED"))),
        (
            "workflows by status",
            _counts(Counter(w.status for w in history.workflows.values()), ("SUCCESSFUL",)),
        ),
        ("runs recorded", f"{len(history.runs)} ({killed} ended by their process's death)"),
        ("cancels, by status then", _counts(cancels)),
        ("faults by kind", _counts(faults, KINDS)),
        ("faults not injected", str(outcome.faults_failed)),
        ("recycles (MAX_REQUESTS)", str(outcome.recycles())),
        ("lost daemons recovered", str(outcome.declared_lost())),
        (
            "claims' commits cut",
            f"{len(history.cuts)} (the task put back by its daemon: "
            f"{sum(1 for cut in history.cuts if (cut.task_id, cut.pid) in history.put_back)})",
        ),
        ("calls by answer", _counts(calls, ("ok",))),
    ]


def summary(outcome: Outcome) -> dict[str, Any]:
    """Return the figures a test asserts on."""
    return {
        "seed": outcome.seed,
        "settled": outcome.settled,
        "tasks": len(outcome.history.tasks),
        "runs": len(outcome.history.runs),
        "calls": len(outcome.history.calls),
        "faults": dict(Counter(fault.kind for fault in outcome.faults)),
        "faults_failed": outcome.faults_failed,
        "violations": {v.name: len(v.violations) for v in outcome.verdicts},
    }


def text(outcome: Outcome) -> str:
    """Return the table as the terminal shows it."""
    lines = [
        f"campaign on {outcome.vendor}: seed {outcome.seed}, {outcome.duration:g} s of faults, "
        f"{outcome.elapsed:.0f} s in all; {_versions()}",
    ]
    lines += [f"  {what:<26} {figures}" for what, figures in rows(outcome)]
    lines.append(
        f"  {'settled':<26} {'yes' if outcome.settled else 'NO (tasks left READY/RUNNING)'}"
    )
    lines += [f"      {line}" for line in outcome.unsettled[: SHOWN * 8]]
    lines.append("")
    lines.append(f"  {'invariant':<16} {'violations':>10}  what it says")
    for verdict in outcome.verdicts:
        lines.append(f"  {verdict.name:<16} {len(verdict.violations):>10}  {verdict.description}")
        lines += [f"      {line}" for line in verdict.violations[:SHOWN]]
    lines.append("")
    lines.append(
        f"replay: .venv/bin/python -m tests.campaign --db {outcome.vendor} "
        f"--duration {outcome.duration:g} --seed {outcome.seed}"
    )
    return "\n".join(lines)


def markdown(outcome: Outcome) -> str:
    """Return the table as docs/reliability.md shows it."""
    lines = [
        f"`.venv/bin/python -m tests.campaign --db {outcome.vendor} --duration "
        f"{outcome.duration:g} --seed {outcome.seed}` ({_versions()}; "
        f"{outcome.elapsed / 60:.0f} minutes in all):",
        "",
        "| | |",
        "|---|---|",
        *(f"| {what} | {figures} |" for what, figures in rows(outcome)),
        f"| settled | {'yes' if outcome.settled else 'no'} |",
        "",
        "| invariant | violations |",
        "|---|---|",
        *(f"| {v.description} | {len(v.violations)} |" for v in outcome.verdicts),
    ]
    return "\n".join(lines)


def write(outcome: Outcome, page: Path) -> None:
    """Put the table into *page*, between this database's markers (replacing the old one)."""
    begin, end = BEGIN.format(db=outcome.vendor), END.format(db=outcome.vendor)
    put_section(page, f"{begin}\n{markdown(outcome)}\n{end}", begin, end, "Reliability")
