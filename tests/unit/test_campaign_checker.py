"""The campaign's checker catches each violation it exists for (a checker that never caught
anything proves nothing): histories written by hand, one wrong thing each."""

from __future__ import annotations

import copy
from collections import Counter

import pytest

from tests.campaign.checker import Cut, History, Run, Task, check
from tests.campaign.workload import Call


def run(task_id: str, attempt: int, started: float, ended: float | None, pid: int = 10) -> Run:
    value = f"{task_id}:{attempt}:{pid}"
    return Run(task_id, attempt, "slow", pid, started - 0.001, started, ended, "ok", value)


def clean() -> History:
    """Two tasks (one retried after its process died), a periodic slot, a call: all correct."""
    return History(
        tasks={
            "t1": Task("t1", "SUCCESSFUL", 1, "t1:1:10", None, "", None),
            "t2": Task("t2", "SUCCESSFUL", 2, "t2:2:11", None, "", None),
            "p1": Task("p1", "SUCCESSFUL", 1, "p1:1:10", None, "campaign.tick", 100.0),
            "p2": Task("p2", "SUCCESSFUL", 1, "p2:1:10", None, "campaign.tick", 101.0),
        },
        runs=[
            run("t1", 1, 1.0, 2.0),
            run("t2", 1, 1.0, None, pid=12),  # killed: ended when pid 12 died
            run("t2", 2, 5.0, 6.0, pid=11),
            run("p1", 1, 100.0, 100.1),
            run("p2", 1, 101.0, 101.1),
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
    )


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
}


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
