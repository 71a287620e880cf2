"""Periodic tasks declared in code: ``@periodic(cron=...)`` or ``@periodic(every=...)`` on a task.

::

    from django.tasks import task
    from socketsvc.tasks import periodic

    @periodic(cron="30 2 * * *", timezone="Europe/Berlin")   # above @task
    @task
    def nightly_report() -> dict: ...

    @periodic(every=timedelta(seconds=30), catch_up="none")
    @task
    def heartbeat() -> None: ...

Slots are instants. A cron schedule's slots are wall-clock times in its time
zone, turned into instants the way cron does across daylight saving time: a
time the clock skips (spring) runs once, at the first minute after the jump;
a time the clock repeats (autumn) runs once, at its first occurrence, unless
the hour field is ``*``, in which case every hour the clock shows runs (an
hourly job runs 23 or 25 times on those days). An ``every`` schedule's slots
are multiples of its interval since the Unix epoch, the same on every host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.core.exceptions import ImproperlyConfigured

CatchUp = Literal["latest", "none", "all"]
CATCH_UP_CHOICES = ("latest", "none", "all")
# At most this many missed slots of one schedule are run with catch_up="all".
MAX_CATCH_UP = 100
# A slot more than this late (or later than the next slot, but never under
# ON_TIME_FLOOR: a scheduler held up for a moment by a busy machine or a slow
# database still runs a short schedule's slots) counts as missed.
ON_TIME = timedelta(seconds=60)
ON_TIME_FLOOR = timedelta(seconds=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
# Instants are kept to the microsecond: the instant just before a slot.
_TICK = timedelta(microseconds=1)
_DAY = timedelta(days=1)


class ScheduleError(ImproperlyConfigured):
    """A schedule cannot be used as declared; the message names it and says why."""


@dataclass(frozen=True)
class Schedule:
    """One periodic task: when its slots are, and what to do about late or busy ones."""

    name: str
    task: Any
    cron: str | None
    every: timedelta | None
    zone: str
    catch_up: CatchUp = "latest"
    overlap: bool = False
    jitter: float = 0.0
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ScheduleError(f"schedule {self.name!r}: give cron= or every=, one of them")
        if self.cron is not None:
            try:
                croniter(self.cron)
            except (ValueError, KeyError) as exc:
                raise ScheduleError(
                    f"schedule {self.name!r}: cron expression {self.cron!r} is invalid: {exc}"
                ) from None
            if len(self.cron.split()) != 5:
                raise ScheduleError(
                    f"schedule {self.name!r}: cron expression {self.cron!r} must have five "
                    "fields (minute hour day month weekday)"
                )
        if self.every is not None and self.every < timedelta(seconds=1):
            raise ScheduleError(f"schedule {self.name!r}: every= must be at least one second")
        if self.catch_up not in CATCH_UP_CHOICES:
            raise ScheduleError(
                f"schedule {self.name!r}: catch_up must be one of {', '.join(CATCH_UP_CHOICES)}, "
                f"not {self.catch_up!r}"
            )
        if self.jitter < 0:
            raise ScheduleError(f"schedule {self.name!r}: jitter must be >= 0 seconds")
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(
                f"schedule {self.name!r}: {self.zone!r} is not a time zone name"
            ) from None

    @property
    def expression(self) -> str:
        """Return the cron expression, or ``every 30s``."""
        if self.cron is not None:
            return self.cron
        assert self.every is not None
        return f"every {self.every.total_seconds():g}s"

    @property
    def task_path(self) -> str:
        """Return the task's dotted path."""
        return str(self.task.module_path)

    def next_after(self, instant: datetime) -> datetime:
        """Return the first slot strictly after *instant* (aware)."""
        if self.every is not None:
            steps = (instant - _EPOCH) // self.every + 1
            return _EPOCH + steps * self.every
        return _CronSlots(self).first_after(instant)

    def last_at_or_before(self, instant: datetime) -> datetime:
        """Return the latest slot at or before *instant* (aware)."""
        if self.every is not None:
            return _EPOCH + ((instant - _EPOCH) // self.every) * self.every
        return _CronSlots(self).last_at_or_before(instant)

    def slots(self, after: datetime, until: datetime, limit: int = 10_000) -> list[datetime]:
        """Return the slots in (*after*, *until*], at most *limit*, the latest ones if more.

        Found from *until* backwards, so the cost is bounded by *limit*, however
        long ago *after* was (a daemon down for a year costs what one down for
        an hour does).
        """
        found: list[datetime] = []
        slot = self.last_at_or_before(until)
        while slot > after and len(found) < limit:
            found.append(slot)
            slot = self.last_at_or_before(slot - _TICK)
        found.reverse()
        return found

    def on_time(self, slot: datetime, now: datetime) -> bool:
        """Return True if *slot* is due now rather than missed (the daemon was not running)."""
        window = min(ON_TIME, max(ON_TIME_FLOOR, self.next_after(slot) - slot))
        return now - slot < window


class _CronSlots:
    """A cron expression's slots as instants, in the schedule's time zone (see the module doc)."""

    def __init__(self, schedule: Schedule) -> None:
        assert schedule.cron is not None
        self.cron = schedule.cron
        self.zone = ZoneInfo(schedule.zone)
        self.every_hour = croniter(self.cron).expanded[1] == ["*"]

    def _instants(self, naive: datetime) -> list[datetime]:
        """Return the instants a wall-clock time stands for (none, one or two)."""
        first = naive.replace(tzinfo=self.zone, fold=0)
        second = naive.replace(tzinfo=self.zone, fold=1)
        if self._exists(first):
            if first.utcoffset() != second.utcoffset() and self.every_hour:
                return [first, second]  # a repeated hour: both, for wildcard hours
            return [first]
        # A skipped time: the first minute the clock shows after the jump.
        probe = naive
        while not self._exists(probe.replace(tzinfo=self.zone)):
            probe += _MINUTE
        return [probe.replace(tzinfo=self.zone)]

    def _exists(self, aware: datetime) -> bool:
        back = aware.astimezone(UTC).astimezone(self.zone)
        return back.replace(tzinfo=None) == aware.replace(tzinfo=None)

    def _shift(self, instant: datetime) -> timedelta:
        """Return by how much the zone's UTC offset changes within a day of *instant*.

        Only within that span of a wall-clock time can cron's order (wall
        clock) and the slots' order (instants) differ.
        """
        offset = instant.astimezone(self.zone).utcoffset() or timedelta(0)
        return max(
            abs(((instant + step).astimezone(self.zone).utcoffset() or offset) - offset)
            for step in (-_DAY, _DAY)
        )

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def last_at_or_before(self, instant: datetime) -> datetime:
        """Return the latest slot at or before *instant*, walking cron's times backwards.

        A wall-clock time later than the instant's by more than the zone's
        shift is a later instant, so the walk starts there; it ends once the
        wall clock is that shift before the best slot found.
        """
        shift = self._shift(instant)
        walker = croniter(self.cron, self._wall(instant) + shift + _MINUTE)
        best: datetime | None = None
        while True:
            naive = walker.get_prev(datetime)
            if best is not None and naive < self._wall(best) - self._shift(best):
                return best
            for candidate in self._instants(naive):
                # In UTC: aware times of one zone compare by wall clock, fold ignored.
                moment = candidate.astimezone(UTC)
                if moment <= instant and (best is None or moment > best):
                    best = moment

    def first_after(self, instant: datetime) -> datetime:
        """Return the first slot after *instant*, walking cron's times forwards.

        The walk starts the zone's shift before the instant's wall-clock time: a
        repeated hour's second occurrence has an earlier wall-clock time than
        the instant before it.
        """
        walker = croniter(self.cron, self._wall(instant) - self._shift(instant) - _MINUTE)
        while True:
            naive = walker.get_next(datetime)
            for candidate in self._instants(naive):
                if candidate > instant:
                    return candidate.astimezone(UTC)


_registry: dict[str, Schedule] = {}


def periodic(
    cron: str | None = None,
    *,
    every: timedelta | None = None,
    timezone: str | None = None,
    catch_up: CatchUp = "latest",
    overlap: bool = False,
    jitter: float = 0.0,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    name: str | None = None,
) -> Any:
    """Run a task on a schedule: put it above ``@task``.

    *timezone* defaults to ``settings.TIME_ZONE``; *catch_up* says what a
    daemon that was not running does about the slots it missed (``"latest"``
    runs the most recent one, ``"none"`` none, ``"all"`` each, up to 100);
    *overlap* False skips a slot while the previous run is queued or running;
    *jitter* delays each run by up to that many seconds; *args*/*kwargs* are
    given to every run; *name* defaults to the task's dotted path.
    """

    def declare(task: Any) -> Any:
        if not hasattr(task, "module_path") or not hasattr(task, "enqueue"):
            raise ScheduleError(f"@periodic goes above @task (it received {task!r}, not a Task)")
        from django.conf import settings

        schedule = Schedule(
            name=name or str(task.module_path),
            task=task,
            cron=cron,
            every=every,
            zone=timezone or str(getattr(settings, "TIME_ZONE", None) or "UTC"),
            catch_up=catch_up,
            overlap=overlap,
            jitter=float(jitter),
            args=tuple(args),
            kwargs=dict(kwargs or {}),
        )
        existing = _registry.get(schedule.name)
        if existing is not None and existing.task_path != schedule.task_path:
            raise ScheduleError(
                f"schedule {schedule.name!r} is declared twice (for {existing.task_path} and "
                f"{schedule.task_path}); give one a distinct name="
            )
        _registry[schedule.name] = schedule
        return task

    return declare


def schedules() -> list[Schedule]:
    """Return every schedule declared so far, by name."""
    return [_registry[name] for name in sorted(_registry)]


def discover() -> list[Schedule]:
    """Import the ``tasks`` module of every installed app; return the schedules they declare."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("tasks")
    return schedules()
