"""Task results in the admin, and admin buttons that enqueue tasks (Django's test client).

No daemon runs here: tasks are enqueued into the test database and their rows
are moved along by hand, as the daemon would.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from project.shop.models import Product
from socketsvc.admin import Button, SocketServiceAdminMixin
from socketsvc.models import TaskRecord, TaskStatus
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def changelist() -> str:
    return reverse("admin:socketsvc_taskrecord_changelist")


def change(record_id: str) -> str:
    return reverse("admin:socketsvc_taskrecord_change", args=[record_id])


def live(*ids: str) -> str:
    return reverse("admin:socketsvc_taskrecord_live") + "?" + "&".join(f"id={i}" for i in ids)


def running(record_id: str, done: int, total: int) -> None:
    TaskRecord.objects.filter(id=record_id).update(
        status=TaskStatus.RUNNING,
        started_at=timezone.now(),
        worker_ids=["w1"],
        progress_done=done,
        progress_total=total,
        progress_note="counting",
    )


def test_the_changelist_shows_status_progress_and_filters(admin_client):
    """Each task shows its status badge and a live progress bar; status is a filter."""
    queued = tasks.add.enqueue(1, 2)
    busy = tasks.count_slowly.enqueue(10, 0.1)
    running(busy.id, 3, 10)
    page = admin_client.get(changelist())
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-socketsvc-task="{busy.id}" data-active="1"' in html
    assert 'style="width: 30%"' in html
    assert "3 / 10 — counting" in html
    assert "socketsvc-status-running" in html and "socketsvc-status-ready" in html
    filtered = admin_client.get(changelist() + "?status__exact=READY").content.decode()
    assert queued.id[:8] in filtered and busy.id[:8] not in filtered
    found = admin_client.get(changelist() + f"?q={busy.id}").content.decode()
    assert busy.id[:8] in found and queued.id[:8] not in found


def test_the_live_endpoint_gives_the_state_the_page_updates(admin_client):
    """The JSON the page polls: status, percent, progress text, times, attempts."""
    busy = tasks.count_slowly.enqueue(10, 0.1)
    running(busy.id, 4, 10)
    state = admin_client.get(live(busy.id)).json()[busy.id]
    assert state["status"] == "RUNNING"
    assert state["percent"] == 40
    assert state["progress"] == "4 / 10 — counting"
    assert state["attempts"] == 1
    assert state["active"] is True


def test_the_live_endpoint_needs_the_view_permission(client):
    """A staff user without view permission on task results gets 403 from the endpoint."""
    User.objects.create_user("clerk", password="pw", is_staff=True)
    client.login(username="clerk", password="pw")
    assert client.get(live("x")).status_code == 403


def test_the_detail_page_shows_arguments_result_and_every_error(admin_client):
    """A finished task's page: its args, return value, each attempt's traceback; nothing to save."""
    result = tasks.add.enqueue(2, 3)
    TaskRecord.objects.filter(id=result.id).update(
        status=TaskStatus.SUCCESSFUL,
        return_value={"sum": 5},
        errors=[{"exception_class_path": "builtins.ConnectionError", "traceback": "Trace one"}],
        worker_ids=["w1", "w2"],
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    html = admin_client.get(change(result.id)).content.decode()
    assert "&quot;args&quot;: [\n    2,\n    3\n  ]" in html
    assert "&quot;sum&quot;: 5" in html
    assert "Attempt 1: builtins.ConnectionError" in html and "Trace one" in html
    assert 'name="_save"' not in html
    assert admin_client.get(reverse("admin:socketsvc_taskrecord_add")).status_code == 403


# 10:15:30 and 10:16:45 UTC are 11:15 and 11:16 in Berlin (CET): what Django's admin shows
# for a datetime in the active zone, in DATETIME_FORMAT ("N j, Y, P" in en-us).
STARTED = datetime(2024, 3, 5, 10, 15, 30, tzinfo=UTC)
FINISHED = datetime(2024, 3, 5, 10, 16, 45, tzinfo=UTC)
STARTED_TEXT = "March 5, 2024, 11:15 a.m."
FINISHED_TEXT = "March 5, 2024, 11:16 a.m."


@pytest.fixture
def in_berlin(settings):
    """The site's zone is one where local time and UTC differ."""
    settings.TIME_ZONE = "Europe/Berlin"


def finished_task() -> str:
    """Return the id of a successful task enqueued and started at STARTED, finished at
    FINISHED."""
    result = tasks.add.enqueue(2, 3)
    TaskRecord.objects.filter(id=result.id).update(
        status=TaskStatus.SUCCESSFUL,
        return_value=5,
        worker_ids=["w1"],
        enqueued_at=STARTED,
        started_at=STARTED,
        finished_at=FINISHED,
    )
    return result.id


def text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).strip()


def form_field(html: str, name: str) -> str:
    """Return the text a change page shows for the read-only field *name*."""
    found = re.search(
        rf'field-{name}\b(?:(?!field-).)*?<div class="readonly">(.*?)</div>', html, re.S
    )
    assert found, name
    return text(found[1])


def list_cell(html: str, name: str) -> str:
    """Return the text of the changelist's first cell in column *name*."""
    found = re.search(rf'<td class="field-{name}\b[^"]*">(.*?)</td>', html, re.S)
    assert found, name
    return text(found[1])


def test_a_task_page_shows_its_times_as_it_shows_enqueued_at(admin_client, in_berlin):
    """Started and finished read as Django shows the plain read-only field enqueued_at: its
    DATETIME_FORMAT, in the active time zone."""
    html = admin_client.get(change(finished_task())).content.decode()
    assert form_field(html, "enqueued_at") == STARTED_TEXT
    assert form_field(html, "started_cell") == STARTED_TEXT
    assert form_field(html, "finished_cell") == FINISHED_TEXT


def test_the_changelist_shows_times_as_it_shows_enqueued_at(admin_client, in_berlin):
    """The changelist's started and finished columns read as its enqueued_at column."""
    finished_task()
    html = admin_client.get(changelist()).content.decode()
    assert list_cell(html, "enqueued_at") == STARTED_TEXT
    assert list_cell(html, "started_cell") == STARTED_TEXT
    assert list_cell(html, "finished_cell") == FINISHED_TEXT


def test_the_live_endpoint_gives_times_as_the_page_shows_them(admin_client, in_berlin):
    """A live update writes the times in the text the page was rendered with, so a cell
    never changes format (or zone) when the script updates it."""
    record_id = finished_task()
    page = admin_client.get(change(record_id)).content.decode()
    state = admin_client.get(live(record_id)).json()[record_id]
    assert state["started_at"] == form_field(page, "started_cell") == STARTED_TEXT
    assert state["finished_at"] == form_field(page, "finished_cell") == FINISHED_TEXT


def test_a_task_page_is_titled_by_its_task_and_id(admin_client):
    """A task's page is headed "Task <name> (<short id>)", not Django's generic "View task
    result"; the window title and the breadcrumbs' last item say the same."""
    record_id = finished_task()
    html = admin_client.get(change(record_id)).content.decode()
    name = f"Task add ({record_id[:8]})"
    assert re.search(r"<h1>(.*?)</h1>", html)[1] == name
    assert text(re.search(r"<title>(.*?)</title>", html, re.S)[1]).startswith(f"{name} | ")
    crumbs = re.search(r'class="breadcrumbs">(.*?)</(?:div|ol)>', html, re.S)[1]
    assert text(crumbs.rsplit("</a>", 1)[1]).removeprefix("&rsaquo;").strip() == name
    assert "View task result" not in html


def test_the_cancel_action_stops_queued_tasks(admin_client):
    """ "Cancel selected tasks" fails a queued task with Cancelled; a finished one is left alone."""
    queued = tasks.add.enqueue(1, 1)
    finished = tasks.add.enqueue(2, 2)
    TaskRecord.objects.filter(id=finished.id).update(status=TaskStatus.SUCCESSFUL)
    response = admin_client.post(
        changelist(),
        {"action": "cancel_tasks", "_selected_action": [queued.id, finished.id]},
        follow=True,
    )
    assert "Asked 1 task(s) to stop" in response.content.decode()
    record = TaskRecord.objects.get(id=queued.id)
    assert record.status == TaskStatus.FAILED
    assert record.errors[-1]["exception_class_path"] == "socketsvc.tasks.Cancelled"
    assert TaskRecord.objects.get(id=finished.id).status == TaskStatus.SUCCESSFUL


def test_the_run_again_action_enqueues_copies_and_links_them(admin_client):
    """ "Run selected tasks again": a new task with the same arguments, linked in the message."""
    failed = tasks.fail.enqueue("once more")
    TaskRecord.objects.filter(id=failed.id).update(status=TaskStatus.FAILED)
    response = admin_client.post(
        changelist(), {"action": "run_again", "_selected_action": [failed.id]}, follow=True
    )
    fresh = TaskRecord.objects.exclude(id=failed.id).get()
    assert fresh.args == ["once more"] and fresh.status == TaskStatus.READY
    assert f'href="{change(fresh.id)}"' in response.content.decode()


def test_cancel_and_run_again_need_the_change_permission(client):
    """A staff user who may only view task results is offered neither action."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_taskrecord"))
    client.login(username="viewer", password="pw")
    tasks.add.enqueue(1, 1)
    html = client.get(changelist()).content.decode()
    assert 'value="cancel_tasks"' not in html and 'value="run_again"' not in html


class CountingAdmin(SocketServiceAdminMixin, admin.ModelAdmin):
    socketsvc_buttons = [
        Button(
            task="tests.testapp.tasks.count_slowly",
            label="Count",
            params=lambda product: {"total": 3, "pause": 0.0},
        ),
        Button(task=tasks.add, label="Add", params=lambda product: [product.stock, 1]),
    ]


def test_a_task_button_enqueues_and_links_the_result_page(admin_user, rf, settings):
    """Button(task=...): pressing it enqueues the task (a dict of kwargs, or a list of args) and
    the message links the task's result page."""
    from django.contrib.messages.storage.fallback import FallbackStorage

    model_admin = CountingAdmin(Product, admin.site)
    product = Product.objects.get(sku="MUG-01")
    for name, expected_args, expected_kwargs in [
        ("count_slowly", [], {"total": 3, "pause": 0.0}),
        ("add", [product.stock, 1], {}),
    ]:
        request = rf.post("/")
        request.user = admin_user
        request.session = {}
        request._messages = FallbackStorage(request)
        response = model_admin.socketsvc_button_view(request, str(product.pk), name)
        assert response.status_code == 302
        record = TaskRecord.objects.latest("enqueued_at")
        assert (record.args, record.kwargs) == (expected_args, expected_kwargs)
        [shown] = list(request._messages)
        assert f'href="{change(record.id)}"' in str(shown)
        assert "queued as task" in str(shown)


def test_a_button_names_either_a_method_or_a_task():
    """Button() with both, or neither, is a configuration error."""
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="one of them"):
        Button("shop.restock", "Both", task=tasks.add)
    with pytest.raises(ImproperlyConfigured, match="one of them"):
        Button(label="Neither")


def test_a_tasks_controls_show_on_its_page_and_why_it_waits_in_the_list(admin_client):
    """Its unique key, limits and expiry on its page; "held back by" and "ended by" columns
    and filters in the list (rate, concurrency, lock, not due; time limit, expired)."""
    from datetime import timedelta

    from tests.testapp import controlled

    unique = controlled.unique_run.enqueue("nightly", 1, 0.0)
    rated = controlled.rated.enqueue(1)
    TaskRecord.objects.filter(id=rated.id).update(
        waiting="rate", available_at=timezone.now() + timedelta(seconds=5)
    )
    later = tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 1)
    timed = controlled.busy_loop.enqueue()
    TaskRecord.objects.filter(id=timed.id).update(
        status=TaskStatus.FAILED,
        errors=[{"exception_class_path": "socketsvc.tasks.TimeLimitExceeded", "traceback": "x"}],
    )
    page = admin_client.get(change(unique.id)).content.decode()
    assert "nightly" in page
    page = admin_client.get(change(timed.id)).content.decode()
    assert "timeout 1 s, hard timeout 4 s" in page
    assert "time limit" in page
    listed = admin_client.get(changelist() + "?held=rate").content.decode()
    assert rated.id[:8] in listed and later.id[:8] not in listed
    listed = admin_client.get(changelist() + "?held=not_due").content.decode()
    assert later.id[:8] in listed and rated.id[:8] not in listed
    listed = admin_client.get(changelist() + "?ended=TimeLimitExceeded").content.decode()
    assert timed.id[:8] in listed and unique.id[:8] not in listed
    assert "held back by" in listed and "ended by" in listed
