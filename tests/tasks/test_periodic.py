"""Periodic tasks run by real daemons on a real MariaDB: once per slot, across restarts and hosts.

The suite's schedule "test.tick" is declared through TEST_PERIODIC (see
tests/testapp/tasks.py) and chosen with SOCKETSVC's SCHEDULES; its runs are task
rows naming the schedule and the slot.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness.daemon import manage
from tests.harness.waiting import poll

pytestmark = pytest.mark.mariadb

# Tests marked with this also run on PostgreSQL: the scheduler's once-per-slot claim.
VENDORS = ("mariadb", "postgresql")


@pytest.fixture
def start_ticking(clean_tasks, start_daemon):
    """start_ticking(spec, socket_path=None): a daemon with task workers deciding "test.tick"."""

    def start(spec: dict, socket_path: str | None = None):
        return start_daemon(
            clean_tasks.url(),
            socket_path=socket_path,
            env={"TEST_PERIODIC": json.dumps(spec)},
            TASK_WORKERS=2,
            SCHEDULES=["test.tick"],
        )

    return start


def runs(db) -> list[tuple[datetime, str]]:
    """Return (slot, status) of every run of test.tick, by slot."""
    return [
        (row[0], row[1])
        for row in db.query(
            "SELECT slot, status FROM socketsvc_task WHERE schedule='test.tick' ORDER BY slot",
            db="socketsvc_test",
        )
    ]


def last_slot(db) -> datetime | None:
    rows = db.query(
        "SELECT last_slot FROM socketsvc_schedule WHERE name='test.tick'", db="socketsvc_test"
    )
    return rows[0][0] if rows else None


def skips_and_failures(*daemons) -> str:
    """The daemons' own account of a slot that did not run (for an assertion's message)."""
    return "\n".join(
        json.dumps(event)
        for daemon in daemons
        for event in daemon.log_events()
        if event.get("event") in ("periodic_slots_skipped", "scheduler_step_failed")
    )


def wait_until(moment: float) -> None:
    """Let the wall clock reach *moment* (time.time()): the passing of time is what is tested."""
    remaining = moment - time.time()
    if remaining > 0:
        time.sleep(remaining)


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_every_two_seconds_for_nine_seconds_gives_four_or_five_runs(clean_tasks, start_ticking):
    """every=2 s for 9 s: 4 or 5 runs, each a successful task result, each for its own slot.

    overlap=True: on a busy machine a run may still be queued when the next slot comes, and
    skipping that slot (overlap=False, tested below) is not what this test is about."""
    daemon = start_ticking({"every": 2, "overlap": True})
    started = time.time()
    wait_until(started + 9)
    assert daemon.stop() == 0
    found = runs(clean_tasks)
    assert 4 <= len(found) <= 5, skips_and_failures(daemon)
    slots = [slot for slot, _ in found]
    assert len(set(slots)) == len(slots)
    # A slot that came due just before SIGTERM may not have started: it stays queued
    # for the next start (SIGTERM starts nothing new). Every earlier one ran.
    *earlier, (_, last) = found
    assert all(status == "SUCCESSFUL" for _, status in earlier)
    assert last in ("SUCCESSFUL", "READY")
    assert all((b - a) == timedelta(seconds=2) for a, b in itertools.pairwise(slots))


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_two_daemons_on_one_database_run_each_slot_exactly_once(
    clean_tasks, start_ticking, short_tmp
):
    """Two daemons deciding every=1 s for 10 s: every slot runs once in all, none is missed.

    overlap=True, so that a run still queued at the next slot on a busy machine does not
    skip that slot: what is tested is that each slot is decided once across daemons."""
    spec = {"every": 1, "overlap": True}
    first = start_ticking(spec, socket_path=str(short_tmp / "a.sock"))
    second = start_ticking(spec, socket_path=str(short_tmp / "b.sock"))
    started = time.time()
    wait_until(started + 10)
    competed = [daemon.call("rpc.status")["tasks"] for daemon in (first, second)]
    assert first.stop() == 0
    assert second.stop() == 0
    slots = [slot for slot, _ in runs(clean_tasks)]
    assert len(slots) >= 9, skips_and_failures(first, second)
    assert len(set(slots)) == len(slots)
    gaps = [(a, b) for a, b in itertools.pairwise(slots) if b - a != timedelta(seconds=1)]
    assert gaps == [], skips_and_failures(first, second)
    # They competed: one found slots the other had decided (held by the row's lock until
    # then). The lock, not the unique key, kept each slot to one run: no insert ever met a
    # slot already taken.
    assert any(status["decided_elsewhere"] > 0 for status in competed), competed
    # (A decision may run no slot: the first look of a daemon only records where it starts.)
    assert sum(status["decided"] for status in competed) >= 1, competed
    taken = [
        event
        for daemon in (first, second)
        for event in daemon.log_events()
        if event.get("event") == "periodic_slot_taken_elsewhere"
    ]
    assert taken == []


@pytest.mark.parametrize("catch_up", ["latest", "none", "all"])
def test_slots_missed_while_stopped_follow_catch_up(
    clean_tasks, start_ticking, short_tmp, catch_up
):
    """Stopped for three 8-second slots, restarted just after a slot: latest runs exactly the
    last missed slot at its first look, none runs none, all runs every one; later slots run
    as usual.

    The daemon is stopped once its first run has finished: a run still queued at the stop
    is the previous run for the restart, and with overlap=False it skips the missed slots
    (logged), which is another scenario than the one tested here."""
    every = 8
    spec = {"every": every, "catch_up": catch_up}
    path = str(short_tmp / "c.sock")
    daemon = start_ticking(spec, socket_path=path)
    poll(lambda: (found := runs(clean_tasks)) and found[-1][1] == "SUCCESSFUL", timeout=30)
    assert daemon.stop() == 0
    assert all(status == "SUCCESSFUL" for _, status in runs(clean_tasks))
    stopped_after = last_slot(clean_tasks)
    missed = [stopped_after + timedelta(seconds=every * n) for n in range(1, 4)]
    # Restart just after the third missed slot, so the first look comes before the next one.
    wait_until(missed[-1].replace(tzinfo=UTC).timestamp() + 0.2)
    restarted = start_ticking(spec, socket_path=path)
    declared = poll(
        lambda: next(
            (e for e in restarted.log_events() if e.get("event") == "schedules_declared"), None
        )
    )
    watching = datetime.fromisoformat(declared["watching_since"]).replace(tzinfo=None)
    assert missed[-1] < watching < missed[-1] + timedelta(seconds=every), (
        f"the restarted daemon began watching at {watching}, not within a slot of "
        f"{missed[-1]}: this machine is too slow for the test's premise"
    )
    poll(lambda: last_slot(clean_tasks) >= missed[-1], timeout=30)
    ran = [s for s, _ in runs(clean_tasks) if stopped_after < s <= missed[-1]]
    if catch_up == "all":
        assert ran == missed, skips_and_failures(restarted)
    elif catch_up == "none":
        assert ran == [], skips_and_failures(restarted)
    else:
        assert ran == [missed[-1]], skips_and_failures(restarted)
    poll(lambda: any(s > missed[-1] for s, _ in runs(clean_tasks)), timeout=30)


def test_a_slot_is_skipped_while_the_previous_run_goes_on(clean_tasks, start_ticking, gate):
    """overlap=False (the default): while a run waits at the gate, the next slots are skipped
    and logged; once it ends, the schedule runs again. Runs never overlap."""
    daemon = start_ticking({"every": 1, "kwargs": {"gate": gate.path}})
    gate.wait_for(1)
    poll(
        lambda: any(
            e.get("event") == "periodic_slots_skipped"
            and e.get("reason") == "the previous run is still queued or running"
            for e in daemon.log_events()
        )
    )
    assert len(runs(clean_tasks)) == 1
    gate.open()
    gate.wait_for(2)
    gate.open()
    poll(lambda: [status for _, status in runs(clean_tasks)][:2] == ["SUCCESSFUL"] * 2)
    rows = clean_tasks.query(
        "SELECT started_at, finished_at FROM socketsvc_task WHERE schedule='test.tick' "
        "AND finished_at IS NOT NULL ORDER BY started_at",
        db="socketsvc_test",
    )
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(rows))


def test_pause_survives_a_restart_and_status_and_socketctl_show_the_schedule(
    clean_tasks, start_ticking, short_tmp
):
    """A schedule paused in the database runs no more, also after a restart; rpc.status gives
    the next slot; socketctl schedules lists it as paused with its last run."""
    path = str(short_tmp / "p.sock")
    daemon = start_ticking({"every": 1}, socket_path=path)
    poll(lambda: len(runs(clean_tasks)) >= 1)
    status = daemon.call("rpc.status")["tasks"]
    assert status["schedules"] == 1
    assert status["next"]["schedule"] == "test.tick"
    clean_tasks.query(
        "UPDATE socketsvc_schedule SET enabled = 0 WHERE name = 'test.tick'", db="socketsvc_test"
    )
    assert daemon.stop() == 0
    daemon = start_ticking({"every": 1}, socket_path=path)
    paused_at = len(runs(clean_tasks))
    poll(
        lambda: any(
            e.get("event") == "periodic_slots_skipped" and e.get("reason") == "paused"
            for e in daemon.log_events()
        )
    )
    assert len(runs(clean_tasks)) == paused_at
    listed = manage(
        "socketctl",
        "schedules",
        env={
            "DATABASE_URL": clean_tasks.url(),
            "TEST_PERIODIC": json.dumps({"every": 1}),
        },
    )
    assert listed.returncode == 0, listed.stderr
    [tick] = [s for s in json.loads(listed.stdout) if s["name"] == "test.tick"]
    assert tick["enabled"] is False
    assert tick["expression"] == "every 1s"
    assert tick["last_run"]["status"] == "SUCCESSFUL"
    assert tick["next_run"] is None


def test_an_invalid_schedule_stops_the_daemon_at_startup_naming_it(clean_tasks, short_tmp):
    """A cron expression that cannot be parsed: the daemon exits at once, naming the schedule."""
    from tests.harness.daemon import Daemon

    daemon = Daemon(
        str(short_tmp / "bad.sock"),
        {"DATABASE_URL": clean_tasks.url(), "TEST_PERIODIC": json.dumps({"cron": "61 * * * *"})},
        settings={"TASK_WORKERS": 1, "SCHEDULES": ["test.tick"]},
    )
    code, output = daemon.run_to_exit()
    assert code != 0
    assert "schedule 'test.tick'" in output
    assert "61 * * * *" in output
    assert "Traceback" not in output


def test_a_slot_already_taken_is_passed_over_and_the_schedule_goes_on(clean_tasks, start_ticking):
    """catch_up="all" with last_slot moved back (as a stale whole-row save once did): the
    scheduler meets slots that already have a run, passes over them, and later slots run."""
    daemon = start_ticking({"every": 1, "catch_up": "all", "overlap": True})
    poll(lambda: len(runs(clean_tasks)) >= 3)
    newest = max(slot for slot, _ in runs(clean_tasks))
    clean_tasks.query(
        "UPDATE socketsvc_schedule SET last_slot = last_slot - INTERVAL 3 SECOND "
        "WHERE name = 'test.tick'",
        db="socketsvc_test",
    )
    poll(lambda: max(slot for slot, _ in runs(clean_tasks)) >= newest + timedelta(seconds=3))
    slots = [slot for slot, _ in runs(clean_tasks)]
    assert len(slots) == len(set(slots))
    assert any(e.get("event") == "periodic_slot_taken_elsewhere" for e in daemon.log_events()), (
        skips_and_failures(daemon)
    )


def test_a_schedule_row_deleted_is_declared_again_and_keeps_running(clean_tasks, start_ticking):
    """The schedule's row deleted from under a running daemon: it is declared again (with a
    note in the log) and its slots go on running, with no step failing."""
    daemon = start_ticking({"every": 1, "overlap": True})
    poll(lambda: len(runs(clean_tasks)) >= 1)
    clean_tasks.query(
        "DELETE FROM socketsvc_schedule WHERE name = 'test.tick'", db="socketsvc_test"
    )
    deleted_at = len(runs(clean_tasks))
    poll(lambda: len(runs(clean_tasks)) >= deleted_at + 2, why=lambda: skips_and_failures(daemon))
    assert last_slot(clean_tasks) is not None
    assert not [e for e in daemon.log_events() if e.get("event") == "scheduler_step_failed"], (
        skips_and_failures(daemon)
    )
    assert any(e.get("event") == "schedule_declared_again" for e in daemon.log_events())
