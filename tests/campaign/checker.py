"""The invariants, checked against the history once the system has settled.

The history is what was written down outside the system under test: each run's own
record (its start, its end, the value it returned), when each process died (its pidfd),
what the clients did and were answered, and the effects each call left; plus the rows the
system ended with. Each invariant's violations are listed with the ids involved, so a
failure says where to look.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from tests.campaign.workload import Call

FINAL = ("SUCCESSFUL", "FAILED")


@dataclass
class Run:
    task_id: str
    attempt: int
    kind: str
    pid: int
    claimed_at: float
    started: float
    ended: float | None
    outcome: str
    value: str


@dataclass
class Task:
    id: str
    status: str
    max_attempts: int
    return_value: Any
    cancel_requested_at: float | None
    schedule: str
    slot: float | None
    unique_key: str | None = None
    lock_key: str | None = None
    enqueued_at: float = 0.0
    limits: dict[str, Any] = field(default_factory=dict)
    args: list[Any] = field(default_factory=list)
    # The text of each error the task's row holds.
    errors: list[str] = field(default_factory=list)
    workflow_id: str | None = None
    flow: dict[str, Any] = field(default_factory=dict)


@dataclass
class Workflow:
    id: str
    status: str
    finished_at: float | None
    reason: dict[str, Any] = field(default_factory=dict)
    on_error: str | None = None


@dataclass
class Cut:
    """A claim whose commit the proxy cut: when, the task it took, the claimant's process."""

    at: float
    task_id: str
    pid: int


@dataclass
class History:
    tasks: dict[str, Task]
    runs: list[Run]
    # Every death of each pid, in order (a pid is reused in a long run).
    deaths: dict[int, list[float]]
    calls: list[Call]
    effects: Counter[str]
    # The schedule's slots' rows (task id by slot), and when it was paused for the settling.
    slots: dict[float, list[str]]
    paused_at: float
    every: float = 1.0
    # Claims whose commit was cut, and the (task, pid) of each task put back by its daemon.
    cuts: list[Cut] = field(default_factory=list)
    put_back: set[tuple[str, int]] = field(default_factory=set)
    # A daemon has this long to put back what a claim in doubt took (the lease: by then a
    # process that could not reach the database is gone, and others take its runs back).
    doubt_within: float = 6.0
    # When each task's enqueue() returned to its client (by then its row was committed).
    enqueue_returned: dict[str, float] = field(default_factory=dict)
    workflows: dict[str, Workflow] = field(default_factory=dict)


@dataclass
class Verdict:
    name: str
    description: str
    violations: list[str] = field(default_factory=list)


def death_after(pid: int, moment: float, deaths: dict[int, list[float]]) -> float:
    """When the process with *pid* that was alive at *moment* died (infinitely late if that
    was not seen): the first death of that pid after *moment*."""
    return next((died for died in deaths.get(pid, ()) if died >= moment), math.inf)


def end_of(run: Run, deaths: dict[int, list[float]]) -> float:
    """When a run ended: its own record, or its process's death; unknown is infinitely late."""
    if run.ended is not None:
        return run.ended
    return death_after(run.pid, run.started, deaths)


def check(history: History) -> list[Verdict]:
    """Return one verdict per invariant."""
    runs_of: dict[str, list[Run]] = defaultdict(list)
    for run in history.runs:
        runs_of[run.task_id].append(run)
    for runs in runs_of.values():
        runs.sort(key=lambda run: run.started)
    return [
        _final(history),
        _no_overlap(history, runs_of),
        _attempts(history, runs_of),
        _cancel(history, runs_of),
        _result(history, runs_of),
        _periodic_once(history, runs_of),
        _periodic_every_slot(history),
        _calls(history),
        _in_doubt(history),
        _unique(history),
        _serial(history, runs_of),
        _concurrency(history),
        _rate(history),
        _time_limit(history),
        _flow_order(history, runs_of),
        _flow_outcome(history, runs_of),
    ]


def _final(history: History) -> Verdict:
    verdict = Verdict("final", "every task reaches a final state; none stays READY or RUNNING")
    for task in history.tasks.values():
        if task.status not in FINAL:
            verdict.violations.append(f"{task.id} is {task.status}")
    return verdict


def _no_overlap(history: History, runs_of: dict[str, list[Run]]) -> Verdict:
    verdict = Verdict("no_overlap", "no two runs of one task overlap in time")
    for task_id, runs in runs_of.items():
        for first, then in itertools.pairwise(runs):
            ended = end_of(first, history.deaths)
            if ended > then.started:
                if math.isinf(ended):
                    how = "its process's death unknown"
                elif first.ended is None:
                    how = f"{ended:.3f}, when its process died"
                else:
                    how = f"{ended:.3f}, by its own record"
                verdict.violations.append(
                    f"{task_id}: attempt {first.attempt} (pid {first.pid}, ended {how}) "
                    f"overlaps attempt {then.attempt} (pid {then.pid}, started "
                    f"{then.started:.3f})"
                )
    return verdict


def _attempts(history: History, runs_of: dict[str, list[Run]]) -> Verdict:
    verdict = Verdict("attempts", "runs started <= attempts allowed (a lost run is one)")
    for task_id, runs in runs_of.items():
        task = history.tasks.get(task_id)
        if task is None:
            verdict.violations.append(f"{task_id} ran but has no row")
        elif len(runs) > task.max_attempts:
            verdict.violations.append(f"{task_id}: {len(runs)} runs, {task.max_attempts} allowed")
    return verdict


def _cancel(history: History, runs_of: dict[str, list[Run]]) -> Verdict:
    verdict = Verdict("cancel", "no run is claimed after its task's cancel")
    for task in history.tasks.values():
        if task.cancel_requested_at is None:
            continue
        for run in runs_of.get(task.id, []):
            if run.claimed_at > task.cancel_requested_at:
                verdict.violations.append(
                    f"{task.id}: attempt {run.attempt} claimed {run.claimed_at:.6f}, "
                    f"after the cancel at {task.cancel_requested_at:.6f}"
                )
    return verdict


def _result(history: History, runs_of: dict[str, list[Run]]) -> Verdict:
    verdict = Verdict("result", "a SUCCESSFUL task's result is the value of a run that ended")
    for task in history.tasks.values():
        if task.status != "SUCCESSFUL":
            continue
        finished = {
            run.value for run in runs_of.get(task.id, []) if run.ended and run.outcome == "ok"
        }
        if task.return_value not in finished:
            verdict.violations.append(
                f"{task.id}: result {task.return_value!r}, finished runs {sorted(finished)}"
            )
    return verdict


def _periodic_once(history: History, runs_of: dict[str, list[Run]]) -> Verdict:
    verdict = Verdict("periodic_once", "each periodic slot has one task, run at most once")
    for slot, task_ids in history.slots.items():
        runs = sum(len(runs_of.get(task_id, [])) for task_id in task_ids)
        if len(task_ids) > 1 or runs > 1:
            verdict.violations.append(f"slot {slot:.0f}: {len(task_ids)} tasks, {runs} runs")
    return verdict


def _periodic_every_slot(history: History) -> Verdict:
    verdict = Verdict(
        "periodic_all",
        'every slot up to the settling has its run (catch_up="all")',
    )
    if not history.slots:
        verdict.violations.append("no slot ran at all")
        return verdict
    slots = sorted(history.slots)
    step = timedelta(seconds=history.every).total_seconds()
    expected = slots[0]
    while expected <= slots[-1]:
        if expected not in history.slots:
            verdict.violations.append(f"slot {expected:.0f} has no run")
        expected += step
    # The schedulers kept deciding until the settling began (a few seconds' grace).
    if slots[-1] < history.paused_at - 5 * step:
        verdict.violations.append(
            f"the last slot run is {history.paused_at - slots[-1]:.1f} s before the settling"
        )
    return verdict


def _calls(history: History) -> Verdict:
    verdict = Verdict(
        "calls", "every call was answered once; a call answered ok ran once, others at most once"
    )
    for call in history.calls:
        ran = history.effects.get(call.token, 0)
        if call.outcome == "ok" and (ran != 1 or call.answer != call.token):
            verdict.violations.append(
                f"{call.token} to {call.daemon}: answered {call.answer!r}, ran {ran} times"
            )
        elif ran > 1:
            verdict.violations.append(
                f"{call.token} to {call.daemon}: {call.outcome}, ran {ran} times"
            )
    return verdict


def _taken_back_from(task: Task | None, pid: int) -> bool:
    """Return True if *task*'s errors say another daemon took its run back from the daemon
    whose process was *pid* (declared lost: its lease expired, e.g. while it was frozen)."""
    if task is None:
        return False
    lost = re.compile(rf"WorkerLost: the daemon running this task \([^)]*:{pid}\b")
    return any(lost.search(error) for error in task.errors)


def _in_doubt(history: History) -> Verdict:
    verdict = Verdict(
        "in_doubt",
        "a task taken by a claim whose commit was cut is put back by the daemon that took it "
        "(unless that process ended first, or its daemon was declared lost and the run taken "
        "back from it)",
    )
    for cut in history.cuts:
        if (cut.task_id, cut.pid) in history.put_back:
            continue
        if _taken_back_from(history.tasks.get(cut.task_id), cut.pid):
            continue
        died = death_after(cut.pid, cut.at, history.deaths)
        if died - cut.at > history.doubt_within:
            how = "lived on" if math.isinf(died) else f"ended {died - cut.at:.1f} s later"
            verdict.violations.append(
                f"{cut.task_id}: the claim of pid {cut.pid} was cut at {cut.at:.3f}; not put "
                f"back, its process {how}"
            )
    return verdict


def _overlaps(runs: list[Run], deaths: dict[int, list[float]]) -> list[tuple[Run, Run]]:
    """Return the pairs of *runs* of different tasks that were inside at the same time (two
    runs of one task are no_overlap's)."""
    ordered = sorted(runs, key=lambda run: run.started)
    found = []
    for n, first in enumerate(ordered):
        ended = end_of(first, deaths)
        for then in ordered[n + 1 :]:
            if then.started >= ended:
                break
            if then.task_id != first.task_id:
                found.append((first, then))
    return found


def _runs_by_key(history: History, kind: str) -> dict[str, list[Run]]:
    """Return the runs of *kind* by the key their task was declared with (its first argument:
    what the task declared, whatever the system stored)."""
    grouped: dict[str, list[Run]] = defaultdict(list)
    for run in history.runs:
        task = history.tasks.get(run.task_id)
        if run.kind == kind and task is not None and task.args:
            grouped[str(task.args[0])].append(run)
    return grouped


def _describe_pair(first: Run, then: Run, deaths: dict[int, list[float]]) -> str:
    return (
        f"{first.task_id} attempt {first.attempt} (ended {end_of(first, deaths):.3f}) and "
        f"{then.task_id} attempt {then.attempt} (started {then.started:.3f})"
    )


def _unique(history: History) -> Verdict:
    verdict = Verdict("unique", "runs of tasks with one unique key never overlap")
    for key, runs in _runs_by_key(history, "unique").items():
        for first, then in _overlaps(runs, history.deaths):
            verdict.violations.append(f"{key}: {_describe_pair(first, then, history.deaths)}")
    return verdict


def _serial(history: History, runs_of: dict[str, list[Run]]) -> Verdict:
    verdict = Verdict(
        "serial",
        "runs of tasks with one lock key never overlap, and a run claimed after an earlier "
        "task of its key was enqueued starts after that task's last run ended",
    )
    grouped = _runs_by_key(history, "serial")
    for key, runs in grouped.items():
        for first, then in _overlaps(runs, history.deaths):
            verdict.violations.append(f"{key}: {_describe_pair(first, then, history.deaths)}")
        tasks = [history.tasks[task_id] for task_id in sorted({run.task_id for run in runs})]
        keyed = [history.tasks[task_id] for task_id in {run.task_id for run in runs}]
        for later in tasks:
            for run in runs_of.get(later.id, []):
                for earlier in keyed:
                    returned = history.enqueue_returned.get(earlier.id, math.inf)
                    if earlier.enqueued_at >= later.enqueued_at or returned > run.claimed_at:
                        continue
                    last = max(
                        (end_of(r, history.deaths) for r in runs_of.get(earlier.id, [])),
                        default=-math.inf,
                    )
                    if last > run.started:
                        verdict.violations.append(
                            f"{key}: {later.id} attempt {run.attempt} started "
                            f"{run.started:.3f}, before {earlier.id} (enqueued earlier) "
                            f"ended {last:.3f}"
                        )
    return verdict


def _limited(history: History, name: str) -> tuple[list[Run], Any]:
    runs = [run for run in history.runs if run.kind == "limited"]
    task = next((history.tasks[run.task_id] for run in runs if run.task_id in history.tasks), None)
    return runs, None if task is None else task.limits.get(name)


def _concurrency(history: History) -> Verdict:
    verdict = Verdict("concurrency", "no more runs of a limited task at once than its limit")
    runs, limit = _limited(history, "concurrency")
    if limit is None:
        return verdict
    events = []
    for run in runs:
        events += [(run.started, 1, run), (end_of(run, history.deaths), -1, run)]
    inside = 0
    for moment, step, run in sorted(events, key=lambda event: (event[0], event[1])):
        inside += step
        if inside > limit:
            verdict.violations.append(
                f"{inside} runs inside at {moment:.3f} (limit {limit}), {run.task_id} started"
            )
    return verdict


def _rate(history: History) -> Verdict:
    verdict = Verdict("rate", "no window of a rate's period holds more claims than its count")
    runs, rate = _limited(history, "rate")
    if rate is None:
        return verdict
    count, period = int(rate[0]), float(rate[1])
    claims = sorted({(run.claimed_at, run.task_id) for run in runs})
    for n, (first, _) in enumerate(claims):
        within = [c for c in claims[n:] if c[0] < first + period]
        if len(within) > count:
            verdict.violations.append(
                f"{len(within)} claims in the {period:g} s from {first:.6f} (limit {count})"
            )
    return verdict


# After its hard limit, a run holding the interpreter has its process killed by the kernel
# within socketsvc.tasks.daemon.runner.KERNEL_KILL_AFTER (2 s); plus room for the claim's
# moment, taken before its transaction began.
_HARD_SLACK = 2.0 + 1.5


def _time_limit(history: History) -> Verdict:
    verdict = Verdict(
        "time_limit", "a run with a hard time limit ends (or its process does) by that limit"
    )
    slack = _HARD_SLACK
    for run in history.runs:
        task = history.tasks.get(run.task_id)
        hard = None if task is None else task.limits.get("hard_timeout")
        if hard is None:
            continue
        ended = end_of(run, history.deaths)
        if ended > run.claimed_at + float(hard) + slack:
            verdict.violations.append(
                f"{run.task_id} attempt {run.attempt} (pid {run.pid}) ended "
                f"{ended - run.claimed_at:.1f} s after its claim (hard limit {hard:g} s)"
            )
    return verdict


def _flow_input(shape: Any, results: dict[str, Any]) -> Any:
    if shape is None:
        return None
    if "one" in shape:
        return results.get(shape["one"])
    return [_flow_input(inner, results) for inner in shape["all"]]


def _flow_refs(shape: Any) -> list[str]:
    if shape is None:
        return []
    if "one" in shape:
        return [shape["one"]]
    inner = [ref for part in shape["all"] for ref in _flow_refs(part)]
    return inner + _flow_refs(shape.get("after"))


def _successful_run(task: Task, runs_of: dict[str, list[Run]]) -> Run | None:
    """The run whose value a SUCCESSFUL task stored (None if there is none)."""
    if task.status != "SUCCESSFUL":
        return None
    return next(
        (
            run
            for run in runs_of.get(task.id, [])
            if run.outcome == "ok" and run.value == task.return_value
        ),
        None,
    )


def _flow_order(history: History, runs_of: dict[str, list[Run]]) -> Verdict:
    verdict = Verdict(
        "flow_order",
        "no workflow step starts before every step it follows succeeded; it receives their "
        "results, in order (a chord's callback: every member's)",
    )
    for task in history.tasks.values():
        shape = task.flow.get("input")
        if task.workflow_id is None or shape is None:
            continue
        runs = runs_of.get(task.id, [])
        if not runs:
            continue
        results: dict[str, Any] = {}
        for ref in _flow_refs(shape):
            earlier = history.tasks.get(ref)
            done = _successful_run(earlier, runs_of) if earlier is not None else None
            if earlier is None or done is None:
                state = "missing" if earlier is None else earlier.status
                verdict.violations.append(
                    f"{task.id} ran though the step {ref} it follows is {state}"
                )
                continue
            results[ref] = earlier.return_value
            first = runs[0]
            if done.ended is not None and first.started < done.ended:
                verdict.violations.append(
                    f"{task.id}: started {first.started:.6f}, before the step {ref} it follows "
                    f"ended ({done.ended:.6f})"
                )
        received = task.args[0] if task.args else None
        wanted = _flow_input(shape, results)
        if len(results) == len(set(_flow_refs(shape))) and received != wanted:
            verdict.violations.append(f"{task.id} received {received!r}, not {wanted!r}")
    return verdict


def _flow_outcome(history: History, runs_of: dict[str, list[Run]]) -> Verdict:
    verdict = Verdict(
        "flow_outcome",
        "a workflow ends as its steps did: SUCCESSFUL when all succeeded (on_error never runs), "
        "FAILED naming a failed step (on_error released once); after it failed or was "
        "cancelled no step is claimed",
    )
    steps: dict[str, list[Task]] = defaultdict(list)
    for task in history.tasks.values():
        if task.workflow_id is not None:
            steps[task.workflow_id].append(task)
    for workflow in history.workflows.values():
        members = [t for t in steps[workflow.id] if t.flow.get("role") != "on_error"]
        handlers = [t for t in steps[workflow.id] if t.flow.get("role") == "on_error"]
        where = f"workflow {workflow.id} ({workflow.status})"
        if workflow.status == "SUCCESSFUL":
            bad = [t.id for t in members if t.status != "SUCCESSFUL"]
            if bad or handlers:
                verdict.violations.append(
                    f"{where}: steps {bad} not SUCCESSFUL, on_error {handlers}"
                )
        elif workflow.status == "FAILED":
            failed = history.tasks.get(workflow.reason.get("step", ""))
            if failed is None or failed.status != "FAILED":
                verdict.violations.append(
                    f"{where}: its failed step {workflow.reason} did not fail"
                )
            if workflow.on_error is not None:
                handler = history.tasks.get(workflow.on_error)
                if handler is None or not runs_of.get(handler.id):
                    verdict.violations.append(f"{where}: its on_error step never ran")
                elif handler.args and handler.args[0].get("step") != workflow.reason.get("step"):
                    verdict.violations.append(f"{where}: on_error received {handler.args[0]}")
        elif workflow.status != "CANCELLED":
            verdict.violations.append(f"{where} did not end")
            continue
        if workflow.status in ("FAILED", "CANCELLED") and workflow.finished_at is not None:
            for task in members:
                for run in runs_of.get(task.id, []):
                    if run.claimed_at > workflow.finished_at:
                        verdict.violations.append(
                            f"{where}: step {task.id} claimed {run.claimed_at:.6f}, after the "
                            f"workflow ended ({workflow.finished_at:.6f})"
                        )
    return verdict
