"""Slots of periodic schedules, and what the scheduler decides, with the clock in the test's hands.

The scheduler's decision is a pure function of the schedule, the last slot
decided, the time now, and when it started watching; these tests step "now"
from one wake-up to the next (the slot the scheduler would sleep until),
across the days Europe/Berlin changes its clocks.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from socketsvc.tasks.daemon.scheduler import decide
from socketsvc.tasks.periodic import MAX_CATCH_UP, Schedule, ScheduleError, periodic

BERLIN = ZoneInfo("Europe/Berlin")


class FakeTask:
    module_path = "tests.fake.task"
    queue_name = "default"

    def enqueue(self, *args, **kwargs):  # pragma: no cover - never called here
        raise AssertionError


def schedule(**options) -> Schedule:
    options.setdefault("zone", "Europe/Berlin")
    if "cron" not in options and "every" not in options:
        options["cron"] = "0 * * * *"
    options.setdefault("cron", None)
    options.setdefault("every", None)
    return Schedule(name="s", task=FakeTask(), **options)


def local(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN)


def run_with_a_test_clock(sched: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Wake at each next slot, as the scheduler does, from *start* to *end*; return the runs."""
    runs: list[datetime] = []
    last = decide(sched, None, start, start).last_slot
    while True:
        now = sched.next_after(last)
        if now > end:
            return runs
        decision = decide(sched, last, now, start)
        runs.extend(decision.run)
        last = decision.last_slot


def per_local_day(runs: list[datetime]) -> Counter[str]:
    return Counter(run.astimezone(BERLIN).date().isoformat() for run in runs)


def test_a_daily_job_runs_once_each_day_across_both_dst_changes():
    """cron "30 2 * * *" in Berlin: once a day; on the spring day (02:30 does not exist) at
    03:00, the first minute after the jump; on the autumn day (02:30 twice) once, the first."""
    runs = run_with_a_test_clock(
        schedule(cron="30 2 * * *"), local(2026, 3, 27, 12, 0), local(2026, 10, 27, 12, 0)
    )
    days = per_local_day(runs)
    assert set(days.values()) == {1}
    assert len(days) == 214  # 2026-03-28 .. 2026-10-27, one each
    spring = [r for r in runs if r.astimezone(BERLIN).date().isoformat() == "2026-03-29"]
    assert spring == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]  # 03:00 CEST
    autumn = [r for r in runs if r.astimezone(BERLIN).date().isoformat() == "2026-10-25"]
    assert autumn == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]  # 02:30 CEST, not CET


def test_an_hourly_job_runs_as_often_as_the_wall_clock_shows_an_hour():
    """cron "0 * * * *" in Berlin: 24 runs a day, 23 on the spring day, 25 on the autumn day,
    and never two for one instant."""
    runs = run_with_a_test_clock(
        schedule(cron="0 * * * *"), local(2026, 3, 27, 23, 30), local(2026, 10, 26, 23, 59)
    )
    days = per_local_day(runs)
    assert days["2026-03-29"] == 23
    assert days["2026-10-25"] == 25
    assert {count for day, count in days.items() if day not in ("2026-03-29", "2026-10-25")} == {24}
    assert len(runs) == len(set(runs))
    assert runs == sorted(runs)


def test_every_is_anchored_to_the_epoch_on_every_host():
    """every=30 s: slots are multiples of 30 s since 1970, whatever time one starts from."""
    sched = schedule(cron=None, every=timedelta(seconds=30), zone="UTC")
    after = datetime(2026, 12, 2, 10, 0, 7, tzinfo=UTC)
    assert sched.next_after(after) == datetime(2026, 12, 2, 10, 0, 30, tzinfo=UTC)
    assert sched.slots(after, after + timedelta(minutes=1)) == [
        datetime(2026, 12, 2, 10, 0, 30, tzinfo=UTC),
        datetime(2026, 12, 2, 10, 1, 0, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("catch_up", "runs"), [("latest", 1), ("none", 0), ("all", 5)], ids=["latest", "none", "all"]
)
def test_slots_missed_while_no_daemon_ran_follow_catch_up(catch_up, runs):
    """Down for five 1-second slots, then restarted: latest runs one, none none, all five."""
    sched = schedule(cron=None, every=timedelta(seconds=1), zone="UTC", catch_up=catch_up)
    last = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    restart = last + timedelta(seconds=5.5)
    decision = decide(sched, last, restart, restart)
    assert len(decision.run) == runs
    assert decision.last_slot == last + timedelta(seconds=5)
    assert decision.skipped == 5 - runs
    if catch_up == "latest":
        assert decision.run == [last + timedelta(seconds=5)]


def test_catch_up_all_is_bounded():
    """catch_up="all" after a long outage runs the latest 100 slots, not every one missed."""
    sched = schedule(cron=None, every=timedelta(seconds=1), zone="UTC", catch_up="all")
    last = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    restart = last + timedelta(hours=1)
    decision = decide(sched, last, restart, restart)
    assert len(decision.run) == MAX_CATCH_UP
    assert decision.run[-1] == restart
    assert decision.last_slot == restart


def test_a_first_look_starts_from_now_and_a_clock_that_went_back_runs_nothing():
    """A schedule never seen before runs nothing for the past; a clock stepped back runs nothing
    until it is past the last slot again."""
    sched = schedule(cron=None, every=timedelta(seconds=10), zone="UTC")
    now = datetime(2026, 12, 2, 10, 0, 3, tzinfo=UTC)
    assert decide(sched, None, now, now).run == []
    assert decide(sched, None, now, now).last_slot == now
    earlier = now - timedelta(minutes=5)
    assert decide(sched, now, earlier, earlier).run == []
    assert decide(sched, now, earlier, earlier).last_slot == now


@pytest.mark.parametrize(("catch_up", "runs"), [("latest", 1), ("none", 1), ("all", 18)])
def test_a_clock_that_jumped_forward_treats_the_jump_as_missed_slots(catch_up, runs):
    """A machine suspended (or a clock stepped) past 18 slots while watching: the slot now due
    runs; the ones jumped over are missed, and catch_up decides about them."""
    sched = schedule(cron=None, every=timedelta(seconds=10), zone="UTC", catch_up=catch_up)
    watching = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    after_jump = watching + timedelta(minutes=3, seconds=1)
    decision = decide(sched, watching, after_jump, watching)
    assert decision.last_slot == watching + timedelta(minutes=3)
    assert len(decision.run) == runs
    assert decision.run[-1] == watching + timedelta(minutes=3)


def test_a_scheduler_held_up_for_a_moment_still_runs_every_slot_of_a_short_schedule():
    """every=1 s, the scheduler held up 3 s (a busy machine, a slow database) while watching:
    the three slots that came meanwhile all run, none counts as missed."""
    sched = schedule(cron=None, every=timedelta(seconds=1), zone="UTC", catch_up="latest")
    watching = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    late = watching + timedelta(seconds=3, milliseconds=200)
    decision = decide(sched, watching, late, watching)
    assert decision.run == [watching + timedelta(seconds=n) for n in (1, 2, 3)]
    assert decision.skipped == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *"}, "cron expression '61 * * * *' is invalid"),
        ({"cron": "* * * *"}, "is invalid"),
        ({"cron": "0 0 * * * *"}, "must have five fields"),
        ({"every": timedelta(0)}, "at least one second"),
        ({"cron": "0 * * * *", "every": timedelta(hours=1)}, "one of them"),
        ({"cron": "0 * * * *", "catch_up": "some"}, "catch_up must be one of"),
        ({"cron": "0 * * * *", "timezone": "Mars/Olympus"}, "is not a time zone name"),
    ],
)
def test_a_bad_declaration_fails_naming_the_schedule_and_the_reason(options, message):
    """@periodic with a bad expression or option raises at once, naming the schedule."""
    from tests.testapp.tasks import add

    with pytest.raises(ScheduleError, match=r"schedule 'bad\.one'") as error:
        periodic(name="bad.one", **options)(add)
    assert message in str(error.value)


def test_periodic_goes_above_task():
    """@periodic under @task (on the bare function) is refused with the fix in the message."""

    def plain() -> None: ...

    with pytest.raises(ScheduleError, match="goes above @task"):
        periodic(cron="* * * * *")(plain)


@pytest.mark.parametrize(
    "options",
    [
        {"cron": "0 * * * *"},
        {"cron": "30 2 * * *"},
        {"cron": "*/7 1-3 * * *"},
        {"cron": "0 0 29 2 *"},
        {"cron": "* * * * *", "zone": "UTC"},
        {"every": timedelta(seconds=90)},
    ],
    ids=["hourly", "daily-0230", "every-7-min-1-to-3", "29-february", "every-minute", "every-90s"],
)
def test_slots_found_backwards_are_the_slots_found_forwards(options):
    """slots() walks back from the end; across both of 2026's clock changes in Berlin (and
    over nine years, for a sparse schedule) it gives what stepping forward with next_after()
    gives, the latest *limit* of them."""
    sched = schedule(**options)
    windows = [
        (local(2026, 3, 28, 22, 0), local(2026, 3, 29, 6, 0)),
        (local(2026, 10, 24, 22, 0), local(2026, 10, 25, 6, 0)),
    ]
    if options.get("cron") == "0 0 29 2 *":
        windows.append((local(2023, 1, 1, 0, 0), local(2032, 1, 1, 0, 0)))
    for after, until in windows:
        forwards = []
        slot = sched.next_after(after)
        while slot <= until:
            forwards.append(slot)
            slot = sched.next_after(slot)
        assert sched.slots(after, until) == forwards
        assert sched.slots(after, until, limit=5) == forwards[-5:]


def test_catching_up_costs_the_same_after_a_day_or_a_year_down(monkeypatch):
    """cron "* * * * *" with catch_up "latest", "none" and "all": the decision after a year of
    downtime takes no more steps of the cron parser than after a day (the slots are found
    from now backwards, at most MAX_CATCH_UP of them)."""
    import croniter as croniter_module

    steps = Counter()
    real_next, real_prev = croniter_module.croniter.get_next, croniter_module.croniter.get_prev

    def counted(real):
        def step(self, *args, **kwargs):
            steps["cron"] += 1
            return real(self, *args, **kwargs)

        return step

    monkeypatch.setattr(croniter_module.croniter, "get_next", counted(real_next))
    monkeypatch.setattr(croniter_module.croniter, "get_prev", counted(real_prev))
    now = datetime(2026, 12, 7, 12, 0, 30, tzinfo=UTC)
    for catch_up in ("latest", "none", "all"):
        sched = schedule(cron="* * * * *", zone="UTC", catch_up=catch_up)
        counts = []
        for downtime in (timedelta(days=1), timedelta(days=365)):
            steps.clear()
            decision = decide(sched, now - downtime, now, now)
            counts.append(steps["cron"])
            assert decision.last_slot == datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
            expected = {"latest": 1, "none": 0, "all": MAX_CATCH_UP}[catch_up]
            assert len(decision.run) == expected
        assert counts[1] <= counts[0], (catch_up, counts)
