"""Schedules and task results in the admin touch only what the admin owns (Django's test client).

The daemon owns a schedule's slots and a task's state; the admin owns a
schedule's pause switch. Every test here reads the SQL the admin ran, so a
write of a whole row (which can move a schedule's ``last_slot`` back, or a
finished task back to READY, when it races the daemon) shows as what it is.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from socketsvc.models import ScheduleRecord, TaskRecord, TaskStatus
from socketsvc.tasks import store
from tests.harness.waiting import poll

pytestmark = pytest.mark.django_db

# The demo's schedule, declared in project/shop/tasks.py.
DECLARED = "project.shop.tasks.check_low_stock"


def schedule_row(name: str = DECLARED, **values) -> ScheduleRecord:
    now = timezone.now()
    return ScheduleRecord.objects.create(
        name=name,
        task_path=DECLARED,
        expression="* * * * *",
        timezone="UTC",
        catch_up="latest",
        declared_at=now,
        last_slot=now.replace(second=0, microsecond=0),
        **values,
    )


# 10:16 UTC is 11:16 in Berlin (CET), written as Django's admin writes a datetime there.
SLOT = datetime(2024, 3, 5, 10, 16, tzinfo=UTC)
SLOT_TEXT = "March 5, 2024, 11:16 a.m."


@pytest.fixture
def in_berlin(settings):
    """The site's zone is one where local time and UTC differ."""
    settings.TIME_ZONE = "Europe/Berlin"


def text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).strip()


def writes(queries: CaptureQueriesContext, table: str) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if re.match(r"\s*(UPDATE|INSERT|DELETE)", q["sql"], re.I) and table in q["sql"]
    ]


def test_pausing_a_schedule_writes_only_its_pause_switch(admin_client):
    """The change form's save sets ``enabled`` alone, conditional on its value, so a slot the
    scheduler decided meanwhile is never written back over."""
    row = schedule_row()
    url = reverse("admin:socketsvc_schedulerecord_change", args=[row.pk])
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(url, {"enabled": ""})
    assert response.status_code == 302
    [update] = writes(queries, "socketsvc_schedule")
    assigned = update.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    assert re.findall(r'[`"](\w+)[`"] =', assigned) == ["enabled"]
    assert "enabled" in update.split(" WHERE ", 1)[1]
    assert ScheduleRecord.objects.get(pk=row.pk).enabled is False


def test_a_schedule_declared_in_code_cannot_be_deleted(admin_client):
    """Deleting a declared schedule is refused (the scheduler would only declare it again);
    a row no code declares any more can be deleted."""
    declared = schedule_row()
    gone = schedule_row(name="an.old.schedule")
    delete = "admin:socketsvc_schedulerecord_delete"
    assert admin_client.post(reverse(delete, args=[declared.pk]), {"post": "yes"}).status_code == (
        403
    )
    assert ScheduleRecord.objects.filter(pk=declared.pk).exists()
    response = admin_client.post(reverse(delete, args=[gone.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not ScheduleRecord.objects.filter(pk=gone.pk).exists()


def test_a_post_to_a_task_page_changes_nothing(admin_client):
    """A task's page is read-only for real: a POST to it (a crafted one with a status, too) is
    refused and writes nothing, so it cannot race the daemon or move a finished task back."""
    record = store.insert(
        store.new_record(
            task_path="tests.testapp.tasks.add",
            queue_name="default",
            backend_name="default",
            priority=0,
            args=[1, 2],
            kwargs={},
            run_after=None,
            max_attempts=1,
            now=timezone.now(),
        ),
        "default",
    )
    TaskRecord.objects.filter(id=record.id).update(
        status=TaskStatus.SUCCESSFUL, finished_at=timezone.now(), return_value=3
    )
    url = reverse("admin:socketsvc_taskrecord_change", args=[record.id])
    assert admin_client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(url, {"status": "READY", "_save": "Save"})
    assert response.status_code == 403
    assert writes(queries, "socketsvc_task") == []
    assert TaskRecord.objects.get(id=record.id).status == TaskStatus.SUCCESSFUL


def test_run_now_wakes_the_daemon_only_once_the_run_is_committed(
    admin_client, service, django_capture_on_commit_callbacks
):
    """ "Run now" under a transaction (ATOMIC_REQUESTS, a wrapping atomic()) tells the daemon
    after the commit: a wake sent before it finds no row, and the run waits for the sweep."""
    stub = service()
    row = schedule_row()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            reverse("admin:socketsvc_schedulerecord_changelist"),
            {"action": "run_now", "_selected_action": [row.pk]},
        )
        assert response.status_code == 302
        assert TaskRecord.objects.filter(schedule=DECLARED).count() == 1
        assert stub.requests == []  # nothing sent before the commit
    assert callbacks  # the wake waits for the commit
    wakes = poll(lambda: [r["params"] for r in stub.requests if r["method"] == "rpc.tasks.wake"])
    assert wakes == [{"queue": "default"}]


def test_the_schedules_list_shows_next_and_last_run_as_the_admin_shows_times(
    admin_client, in_berlin
):
    """Next run and the last run's time read as every other time in the admin: Django's
    DATETIME_FORMAT in the active time zone (not the schedule's zone, UTC here)."""
    row = schedule_row(next_slot=SLOT)
    record = store.insert(
        store.new_record(
            task_path=DECLARED,
            queue_name="default",
            backend_name="default",
            priority=0,
            args=[],
            kwargs={},
            run_after=None,
            max_attempts=1,
            now=timezone.now(),
        ),
        "default",
    )
    TaskRecord.objects.filter(id=record.id).update(schedule=row.name, enqueued_at=SLOT)
    html = admin_client.get(reverse("admin:socketsvc_schedulerecord_changelist")).content
    cells = {
        name: text(cell)
        for name, cell in re.findall(r'<td class="field-(\w+)[^"]*">(.*?)</td>', html.decode())
    }
    assert cells["next_run"] == SLOT_TEXT
    assert cells["last_run_cell"] == f"Ready {SLOT_TEXT}"


def test_a_schedule_page_shows_next_run_as_it_shows_the_last_slot(admin_client, in_berlin):
    """On a schedule's page, next run reads as the plain read-only field last slot."""
    row = schedule_row(next_slot=SLOT)
    ScheduleRecord.objects.filter(pk=row.pk).update(last_slot=SLOT)
    url = reverse("admin:socketsvc_schedulerecord_change", args=[row.pk])
    html = admin_client.get(url).content.decode()
    shown = {
        name: text(value)
        for name, value in re.findall(
            r'field-(\w+)\b(?:(?!field-).)*?<div class="readonly">(.*?)</div>', html, re.S
        )
    }
    assert shown["last_slot"] == SLOT_TEXT
    assert shown["next_run"] == SLOT_TEXT
