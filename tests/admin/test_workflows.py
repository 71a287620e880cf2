"""Workflows in the admin (Django's test client): the graph page, its live JSON, cancel.

No daemon runs here: workflows are enqueued into the test database and their
steps' rows are moved along by hand, as the daemon would (the browser test
watches a real one).
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from socketsvc.models import TaskRecord, TaskStatus, WorkflowRecord
from socketsvc.tasks import chain, chord, get_workflow, group, step
from tests.testapp import flows

pytestmark = pytest.mark.django_db


def page(workflow_id: str) -> str:
    return reverse("admin:socketsvc_workflowrecord_change", args=[workflow_id])


def _stock_take() -> tuple[str, list[str]]:
    flow = chain(
        chord(group(step(flows.add, n, 1) for n in range(3)), step(flows.once, "a")),
        step(flows.then, "a", "last"),
    ).enqueue(name="three, merged, filed", on_error=step(flows.on_error, "a"))
    return flow.id, [s.id for s in flow.steps]


def test_the_page_draws_every_step_as_a_box_linking_its_task_and_the_task_links_back(
    admin_client,
):
    """Boxes in columns by depth, coloured by state, each a link to its task's page; the
    on_error step dashed at the end; the task's page names its workflow and step."""
    workflow_id, steps = _stock_take()
    html = admin_client.get(page(workflow_id)).content.decode()
    assert "<svg" in html and "socketsvc-graph" in html
    for task_id in steps:
        assert f'data-step="{task_id}"' in html
        assert reverse("admin:socketsvc_taskrecord_change", args=[task_id]) in html
    found = re.findall(r'<g class="([^"]+)" data-step="([0-9a-f]+)"', html)
    by_step = {task_id: cls for cls, task_id in found}
    assert all("socketsvc-node-ready" in by_step[s] for s in steps[:3])
    assert all("socketsvc-node-waiting" in by_step[s] for s in steps[3:])
    assert "socketsvc-node-handler" in by_step[steps[-1]]
    assert html.count('class="socketsvc-edge"') == 3 + 1  # three into the callback, one after
    assert "http://" not in html.split("<svg", 1)[1].split("</svg>")[0].replace(
        "http://www.w3.org/2000/svg", ""
    )
    task_page = admin_client.get(
        reverse("admin:socketsvc_taskrecord_change", args=[steps[3]])
    ).content.decode()
    assert f'href="{page(workflow_id)}"' in task_page
    assert "(step 4)" in task_page


def test_the_live_json_gives_each_steps_state_and_progress(admin_client):
    """What the page's script applies: a running step's state and percent, the count."""
    workflow_id, steps = _stock_take()
    TaskRecord.objects.filter(id=steps[0]).update(
        status=TaskStatus.RUNNING, started_at=timezone.now(), progress_done=1, progress_total=4
    )
    TaskRecord.objects.filter(id=steps[1]).update(
        status=TaskStatus.SUCCESSFUL, finished_at=timezone.now(), return_value=2
    )
    live = admin_client.get(
        reverse("admin:socketsvc_workflowrecord_live", args=[workflow_id])
    ).json()
    assert live["status"] == "RUNNING" and live["active"] is True
    assert live["done"] == 1 and live["total"] == 5
    assert live["steps"][steps[0]] == {"state": "running", "percent": 25, "label": "running 25%"}
    assert live["steps"][steps[1]]["state"] == "successful"
    assert live["steps"][steps[3]]["state"] == "waiting"


def test_cancel_from_the_page_fails_every_step_not_started_and_on_error_does_not_run(
    admin_client,
):
    """The page's Cancel button (a POST): the workflow is CANCELLED, a running step is asked
    to stop, every step not started ends FAILED (Cancelled), the on_error step too."""
    workflow_id, steps = _stock_take()
    TaskRecord.objects.filter(id=steps[0]).update(
        status=TaskStatus.RUNNING, started_at=timezone.now(), claimed_by="w", claims=1
    )
    html = admin_client.get(page(workflow_id)).content.decode()
    assert "data-socketsvc-cancel-workflow" in html
    cancel = reverse("admin:socketsvc_workflowrecord_cancel", args=[workflow_id])
    assert admin_client.get(cancel).status_code == 403  # a POST only
    response = admin_client.post(cancel)
    assert response.status_code == 302
    state = get_workflow(workflow_id)
    assert state.status == "CANCELLED"
    assert state.reason == {"cancelled_by": "admin"}
    rows = {row.id: row for row in TaskRecord.objects.filter(workflow_id=workflow_id)}
    assert rows[steps[0]].status == TaskStatus.RUNNING
    assert rows[steps[0]].cancel_requested_at is not None
    for task_id in steps[1:]:
        assert rows[task_id].status == TaskStatus.FAILED
        assert rows[task_id].started_at is None
        assert rows[task_id].errors[-1]["exception_class_path"] == "socketsvc.tasks.Cancelled"
    after = admin_client.get(page(workflow_id)).content.decode()
    assert "data-socketsvc-cancel-workflow" not in after
    assert "socketsvc-node-cancelled" in after


def test_a_user_who_may_only_view_sees_the_graph_but_cannot_cancel(client):
    """The view permission shows the page without the button; a POST to cancel is refused."""
    workflow_id, _ = _stock_take()
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_workflowrecord"))
    client.force_login(user)
    html = client.get(page(workflow_id)).content.decode()
    assert "<svg" in html and "data-socketsvc-cancel-workflow" not in html
    cancel = reverse("admin:socketsvc_workflowrecord_cancel", args=[workflow_id])
    assert client.post(cancel).status_code == 403
    assert WorkflowRecord.objects.get(id=workflow_id).status == "RUNNING"


def test_the_changelist_filters_by_status_and_counts_finished_steps(admin_client):
    """Workflows by status, each with its steps finished out of its steps."""
    running, _ = _stock_take()
    cancelled, _ = _stock_take()
    admin_client.post(reverse("admin:socketsvc_workflowrecord_cancel", args=[cancelled]))
    changelist = reverse("admin:socketsvc_workflowrecord_changelist")
    html = admin_client.get(changelist).content.decode()
    assert running[:8] in html and cancelled[:8] in html
    assert "0 / 5" in html and "5 / 5" in html  # cancelled: every step ended unstarted
    only = admin_client.get(changelist + "?status__exact=CANCELLED").content.decode()
    assert cancelled[:8] in only and running[:8] not in only
