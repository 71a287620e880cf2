"""The campaign's checker catches each violation it exists for (a checker that never caught
anything proves nothing): histories written by hand, one wrong thing each."""

from __future__ import annotations

import copy
from collections import Counter

import pytest

from tests.campaign.checker import Cut, History, Run, Task, Workflow, check
from tests.campaign.workload import Call


def run(  # noqa: PLR0917
    task_id: str,
    attempt: int,
    started: float,
    ended: float | None,
    pid: int = 10,
    kind: str = "slow",
) -> Run:
    value = f"{task_id}:{attempt}:{pid}"
    return Run(task_id, attempt, kind, pid, started - 0.001, started, ended, "ok", value)


LIMITS = {"concurrency": 2, "rate": [5, 1.0]}


def controlled(task_id: str, args: list[object], at: float, **fields: object) -> Task:
    """A SUCCESSFUL task under @limits, enqueued at *at*."""
    task = Task(task_id, "SUCCESSFUL", 1, f"{task_id}:1:10", None, "", None, enqueued_at=at)
    task.args = list(args)
    for name, value in fields.items():
        setattr(task, name, value)
    return task


def clean() -> History:
    """Two tasks (one retried after its process died), a periodic slot, a call: all correct."""
    return History(
        tasks={
            "t1": Task("t1", "SUCCESSFUL", 1, "t1:1:10", None, "", None),
            "t2": Task("t2", "SUCCESSFUL", 2, "t2:2:11", None, "", None),
            "p1": Task("p1", "SUCCESSFUL", 1, "p1:1:10", None, "campaign.tick", 100.0),
            "p2": Task("p2", "SUCCESSFUL", 1, "p2:1:10", None, "campaign.tick", 101.0),
            # Controlled tasks: two of one unique key, two of one lock key, three limited to
            # two at once and five starts a second, one with a hard limit of 1.5 s.
            "u1": controlled("u1", ["k0", 0.1], 9.0),
            "u2": controlled("u2", ["k0", 0.1], 11.2),
            "s1": controlled("s1", ["k1", 0.1], 20.0),
            "s2": controlled("s2", ["k1", 0.1], 20.1),
            "l1": controlled("l1", [0.1], 29.0, limits=LIMITS),
            "l2": controlled("l2", [0.1], 29.0, limits=LIMITS),
            "l3": controlled("l3", [0.1], 29.0, limits=LIMITS),
            "x1": controlled("x1", ["busy"], 39.0, limits={"hard_timeout": 1.5}),
            # A chord (f1, f2, then fj with both results) that succeeded; a chain (g1 failed,
            # so g2 never started) whose on_error step h ran.
            **_steps("w1", {"f1": None, "f2": None}, "fj", ["f1", "f2"]),
            "g1": flow_step("g1", "w2", "FAILED", None),
            "g2": flow_step("g2", "w2", "FAILED", {"one": "g1"}),
            "h": flow_step("h", "w2", "SUCCESSFUL", None, role="on_error", args=[{"step": "g1"}]),
        },
        workflows={
            "w1": Workflow("w1", "SUCCESSFUL", 53.0),
            "w2": Workflow("w2", "FAILED", 61.0, reason={"step": "g1"}, on_error="h"),
        },
        runs=[
            run("t1", 1, 1.0, 2.0),
            run("t2", 1, 1.0, None, pid=12),  # killed: ended when pid 12 died
            run("t2", 2, 5.0, 6.0, pid=11),
            run("p1", 1, 100.0, 100.1),
            run("p2", 1, 101.0, 101.1),
            run("u1", 1, 10.0, 11.0, kind="unique"),
            run("u2", 1, 11.5, 12.0, kind="unique"),
            run("s1", 1, 21.0, 22.0, kind="serial"),
            run("s2", 1, 22.5, 23.0, kind="serial"),
            run("l1", 1, 30.0, 31.0, kind="limited"),
            run("l2", 1, 30.2, 31.2, kind="limited"),
            run("l3", 1, 31.1, 32.0, kind="limited"),
            run("x1", 1, 40.0, 41.0, kind="timed"),
            run("f1", 1, 50.0, 51.0, kind="flow"),
            run("f2", 1, 50.2, 51.2, kind="flow"),
            run("fj", 1, 52.0, 52.1, kind="flow_join"),
            Run("g1", 1, "flow", 10, 59.9, 60.0, 60.5, "ValueError", ""),
            run("h", 1, 62.0, 62.1, kind="flow_on_error"),
        ],
        deaths={12: [4.0]},
        calls=[Call("c1", "a", "ok", "c1"), Call("c2", "b", "ServiceUnavailable")],
        effects=Counter({"c1": 1}),
        slots={100.0: ["p1"], 101.0: ["p2"]},
        paused_at=103.0,
        # t1's first claim was cut (pid 10 put it back); pid 12 died with its claim in doubt.
        cuts=[Cut(0.5, "t1", 10), Cut(3.0, "t2", 12)],
        put_back={("t1", 10)},
        doubt_within=6.0,
        enqueue_returned={"s1": 20.05, "s2": 20.15},
    )


def flow_step(  # noqa: PLR0917
    task_id: str,
    workflow: str,
    status: str,
    shape: dict[str, object] | None,
    role: str = "",
    args: list[object] | None = None,
) -> Task:
    value = f"{task_id}:1:10" if status == "SUCCESSFUL" else None
    task = Task(task_id, status, 2, value, None, "", None, workflow_id=workflow)
    task.flow = {"input": shape, **({"role": role} if role else {})}
    task.args = list(args or [])
    return task


def _steps(
    workflow: str, members: dict[str, None], callback: str, order: list[str]
) -> dict[str, Task]:
    found = {name: flow_step(name, workflow, "SUCCESSFUL", None) for name in members}
    shape = {"all": [{"one": name} for name in order]}
    found[callback] = flow_step(
        callback, workflow, "SUCCESSFUL", shape, args=[[f"{name}:1:10" for name in order]]
    )
    return found


def violations(history: History) -> dict[str, int]:
    return {verdict.name: len(verdict.violations) for verdict in check(history)}


def test_a_correct_history_has_no_violation():
    """The history of a correct run counts zero everywhere."""
    assert set(violations(clean()).values()) == {0}


def broken(change) -> History:
    history = copy.deepcopy(clean())
    change(history)
    return history


CASES = {
    "final": lambda h: setattr(h.tasks["t1"], "status", "RUNNING"),
    # The killed run's process died only after the next run had started.
    "no_overlap": lambda h: h.deaths.update({12: [5.5]}),
    "attempts": lambda h: setattr(h.tasks["t2"], "max_attempts", 1),
    "cancel": lambda h: setattr(h.tasks["t2"], "cancel_requested_at", 3.0),
    "result": lambda h: setattr(h.tasks["t1"], "return_value", "t1:1:99"),
    "periodic_once": lambda h: h.slots[100.0].append("t1"),
    "periodic_all": lambda h: h.slots.update({103.0: ["t1"]}),
    "calls": lambda h: h.effects.update({"c2": 2}),
    # The claimant never put the task back and lived on.
    "in_doubt": lambda h: h.put_back.clear(),
    # A second task of key k0 ran while the first did.
    "unique": lambda h: setattr(h.runs[6], "started", 10.5),
    # The later task of key k1 ran while the earlier one did.
    "serial": lambda h: setattr(h.runs[8], "started", 21.5),
    # A third limited run inside at once.
    "concurrency": lambda h: _add_limited(h, [(30.1, 30.5)]),
    # Seven claims within one second, never more than two runs inside.
    "rate": lambda h: _add_limited(h, [(31.3 + n / 10, 31.35 + n / 10) for n in range(6)]),
    # The run with a 1.5 s hard limit ran 6 s.
    "time_limit": lambda h: setattr(h.runs[12], "ended", 46.0),
    # The chord's callback started before its second member ended.
    "flow_order": lambda h: setattr(h.runs[15], "started", 51.1),
    # A workflow FAILED though the step it names succeeded.
    "flow_outcome": lambda h: (
        setattr(h.workflows["w1"], "status", "FAILED")
        or h.workflows["w1"].reason.update({"step": "f1"})
    ),
}


def _add_limited(history: History, spans: list[tuple[float, float]]) -> None:
    for n, (started, ended) in enumerate(spans):
        task_id = f"lx{n}"
        history.tasks[task_id] = controlled(task_id, [0.1], 29.0, limits=LIMITS)
        history.runs.append(run(task_id, 1, started, ended, kind="limited"))


def test_a_run_claimed_before_an_earlier_task_of_its_key_was_enqueued_may_run_first():
    """Order is owed only once the earlier task's enqueue returned: a run claimed before
    that (the earlier row not committed yet) may start first, as long as none overlap."""

    def claimed_early(h: History) -> None:
        h.enqueue_returned["s1"] = 30.0  # s1's enqueue returned after s2's run was claimed
        h.runs[7].started, h.runs[7].ended = 24.0, 25.0  # s1 ran after s2

    assert violations(broken(claimed_early))["serial"] == 0


@pytest.mark.parametrize("invariant", sorted(CASES))
def test_each_broken_invariant_is_counted(invariant):
    """One wrong thing in the history: exactly that invariant counts a violation."""
    found = violations(broken(CASES[invariant]))
    assert found[invariant] >= 1
    assert {name: n for name, n in found.items() if name != invariant and n} == {}


def test_a_run_whose_process_death_was_never_seen_overlaps_any_later_run():
    """An open run whose process's death is unknown is taken as still running: the checker
    never assumes a kill it did not see."""
    assert violations(broken(lambda h: h.deaths.clear()))["no_overlap"] == 1


def test_a_reused_pid_ends_each_run_with_the_death_of_the_process_it_ran_in():
    """pid 12 belonged to a process that died before the killed run started, and to one that
    died long after: the run ended with the one alive when it started (no overlap), and had
    that death been missed, the later one would be taken (an overlap, never a hidden one)."""
    assert violations(broken(lambda h: h.deaths.update({12: [0.5, 4.0, 50.0]})))["no_overlap"] == 0
    assert violations(broken(lambda h: h.deaths.update({12: [0.5, 50.0]})))["no_overlap"] == 1


def test_a_run_that_overtook_an_earlier_committed_task_of_its_key_is_counted():
    """s1 was enqueued (and its enqueue returned) before s2's run was claimed, yet ran after
    it: no overlap, but out of order."""

    def overtaken(h: History) -> None:
        h.runs[7].started, h.runs[7].ended = 24.0, 25.0

    assert violations(broken(overtaken))["serial"] == 1


def test_a_cut_claim_taken_back_from_a_daemon_declared_lost_is_not_its_to_put_back():
    """pid 10's claim of t1 was cut and pid 10 never put it back, but its daemon was declared
    lost (frozen past its lease) and another took the run back, naming it: the task was
    delivered the designed way. Without that error the invariant counts it."""

    def declared_lost(h: History) -> None:
        h.put_back.clear()
        h.tasks["t1"].errors = [
            "socketsvc.tasks.WorkerLost: the daemon running this task (vm:10) stopped before it "
            "finished\n"
        ]

    assert violations(broken(declared_lost))["in_doubt"] == 0

    def another_daemon_lost(h: History) -> None:
        h.put_back.clear()
        h.tasks["t1"].errors = [
            "socketsvc.tasks.WorkerLost: the daemon running this task (vm:101) stopped before "
            "it finished\n"
        ]

    assert violations(broken(another_daemon_lost))["in_doubt"] == 1


def test_a_callback_given_its_members_results_out_of_order_is_counted():
    """A chord's callback must receive the members' results in member order."""

    def swapped(h: History) -> None:
        h.tasks["fj"].args = [["f2:1:10", "f1:1:10"]]

    assert violations(broken(swapped))["flow_order"] == 1


def test_a_step_claimed_after_its_workflow_was_cancelled_is_counted():
    """Once a workflow is cancelled, no step of it is claimed."""

    def claimed_late(h: History) -> None:
        h.workflows["w1"].status, h.workflows["w1"].finished_at = "CANCELLED", 51.95

    assert violations(broken(claimed_late)) == {**violations(clean()), "flow_outcome": 1}
