"""The dashboard page: who may see it, what it draws from the activity and task tables, and
what it says when the daemon does not answer."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from socketsvc.models import ActivityRecord, TaskRecord, TaskStatus
from socketsvc.observe.activity import bucket_of

pytestmark = pytest.mark.django_db
URL = "/admin/socketsvc/activityrecord/"


@pytest.fixture(autouse=True)
def no_daemon(settings, short_tmp):
    settings.SOCKETSVC = {"SOCKET": str(short_tmp / "none.sock"), "CALL_TIMEOUT": 2.0}


def _minute(ago: int) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=ago)


def _figure(ago: int, series: str, value: float, label: str = "", bucket: int = 0) -> None:
    ActivityRecord.objects.create(
        minute=_minute(ago), series=series, label=label, bucket=bucket, value=value
    )


def test_the_app_index_links_it_and_staff_need_the_view_permission(admin_client, client):
    index = admin_client.get("/admin/socketsvc/").content.decode()
    assert f'href="{URL}"' in index and ">Dashboard<" in index
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(clerk)
    assert client.get(URL).status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_activityrecord"))
    client.force_login(User.objects.get(pk=clerk.pk))
    assert client.get(URL).status_code == 200
    # Nothing to add, change or delete: it is a page, not a table to edit.
    assert client.get(f"{URL}add/").status_code == 403


def test_it_draws_what_the_activity_table_holds(admin_client):
    for ago, count in ((3, 4), (2, 6)):
        _figure(ago, "started", count, "mail")
        _figure(ago, "latency", count, "mail", bucket_of(0.003))
        _figure(ago, "duration", count, "mail", bucket_of(0.2))
    _figure(2, "failed", 2, "mail")
    _figure(1, "calls", 120)
    _figure(1, "call_errors", 6)
    _figure(1, "depth", 17, "mail")
    _figure(5, "db_down", 30, "default")
    _figure(60 * 3, "started", 1000, "mail")  # three hours ago: not in the last hour
    html = admin_client.get(URL).content.decode()
    assert re.search(r'data-socketsvc-field="started-total">10<', html)
    assert re.search(r'data-socketsvc-field="failed-total">2<', html)
    assert html.count('<figure class="socketsvc-chart"><figcaption>') == 6
    assert html.count('class="socketsvc-down"') == 6  # its minute, on every chart
    assert "socketsvc-line" in html and "mail</title>" in html
    day = admin_client.get(URL, {"range": "day"}).content.decode()
    assert re.search(r'data-socketsvc-field="started-total">1010<', day)
    # The refresh's fragment: the figures alone, no page around them.
    fragment = admin_client.get(URL, {"figures": "1"}).content.decode()
    assert "<html" not in fragment and fragment.count('<figure class="socketsvc-chart">') == 6


def test_it_lists_the_queues_as_they_stand_and_says_the_daemon_did_not_answer(admin_client):
    now = timezone.now()
    for n, status in enumerate(
        [TaskStatus.READY, TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.WAITING]
    ):
        TaskRecord.objects.create(
            id=f"t{n}",
            task_path="project.shop.tasks.x",
            queue_name="mail",
            backend_name="default",
            status=status,
            enqueued_at=now,
            available_at=now - timedelta(seconds=90),
        )
    html = admin_client.get(URL).content.decode()
    row = re.search(r'<tr data-socketsvc-queue="mail">(.*?)</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[:4] == ["mail", "2", "1", "1"]
    assert cells[4].endswith(" s") or cells[4].endswith(" min")
    assert "the daemon did not answer" in html
