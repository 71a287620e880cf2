"""Workflows in the admin: a changelist by status, and a page that draws the graph live.

The workflow's page draws its steps (:mod:`socketsvc.admin.graph`) and lists
them; while anything in it may still change, a small script asks
``<workflow>/live/`` once a second and recolours the boxes, moves the
progress bars and rewrites the status in place. Each step links to its
task's page, which links back. Staff with the change permission may cancel a
running workflow (the page's button, or the changelist's action).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.safestring import SafeString

from socketsvc.admin import graph
from socketsvc.admin.tasks import admin_time, status_badge
from socketsvc.models import TaskRecord, TaskStatus, WorkflowRecord, WorkflowStatus
from socketsvc.tasks.workflows.state import cancel_workflow, read_workflow, steps_of

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[WorkflowRecord]
else:
    _ModelAdmin = admin.ModelAdmin

_UNFINISHED = (TaskStatus.WAITING, TaskStatus.READY, TaskStatus.RUNNING)


def _finished(workflow: WorkflowRecord) -> int:
    """Return how many of a workflow's steps finished, its on_error step left out."""
    return (
        TaskRecord.objects.using(_database(workflow))
        .filter(workflow_id=workflow.id, status__in=(TaskStatus.SUCCESSFUL, TaskStatus.FAILED))
        .exclude(id=workflow.graph.get("on_error") or "")
        .count()
    )


def _database(workflow: WorkflowRecord) -> str:
    return str(workflow._state.db or "default")


def live_state(workflow: WorkflowRecord, rows: list[TaskRecord]) -> dict[str, Any]:
    """Return what the workflow's page changes in place."""
    steps = {row.id: graph.step_live(row) for row in rows}
    on_error = workflow.graph.get("on_error")
    finished = sum(1 for row in rows if row.id != on_error and row.status not in _UNFINISHED)
    return {
        "status": workflow.status,
        "status_label": workflow.get_status_display(),
        "finished_at": admin_time(workflow.finished_at),
        "done": finished,
        "total": workflow.steps,
        # Polling stops once nothing can change (an on_error step may run after a failure).
        "active": workflow.status == WorkflowStatus.RUNNING
        or any(row.status in _UNFINISHED for row in rows),
        "steps": steps,
    }


@admin.register(WorkflowRecord)
class WorkflowRecordAdmin(_ModelAdmin):
    """Workflows: watch them as a graph, cancel them."""

    list_display = ["short_id", "name", "status_badge", "steps_done", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["=id", "name"]
    date_hierarchy = "created_at"
    actions = ["cancel_workflows"]
    fields = ["id", "name", "status", "created_at", "finished_at"]

    class Media:
        css = {"all": ["socketsvc/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Workflows are enqueued by code."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The page is a view; cancelling needs the change permission (checked per action)."""
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return list(flatten_fieldsets(self.get_fieldsets(request, obj)))

    @admin.display(description="id", ordering="id")
    def short_id(self, workflow: WorkflowRecord) -> str:
        return workflow.id[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, workflow: WorkflowRecord) -> SafeString:
        return status_badge(workflow.status, workflow.get_status_display())

    @admin.display(description="steps finished")
    def steps_done(self, workflow: WorkflowRecord) -> str:
        return f"{_finished(workflow)} / {workflow.steps}"

    # -- the graph page ---------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        """The graph page replaces the change page; its live JSON and its cancel beside it."""
        view = self.admin_site.admin_view
        return [
            path(
                "<str:object_id>/live/",
                view(self.live_view),
                name="socketsvc_workflowrecord_live",
            ),
            path(
                "<str:object_id>/cancel/",
                view(self.cancel_view),
                name="socketsvc_workflowrecord_cancel",
            ),
            path(
                "<str:object_id>/change/",
                view(self.graph_view),
                name="socketsvc_workflowrecord_change",
            ),
            *super().get_urls(),
        ]

    def _workflow(self, request: HttpRequest, object_id: str) -> WorkflowRecord:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(self.get_queryset(request), id=object_id)

    def graph_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Draw the workflow: the graph, its steps, its result or why it failed."""
        workflow = self._workflow(request, object_id)
        using = _database(workflow)
        rows = steps_of(workflow.id, using)
        site = self.admin_site.name

        def url_of(task_id: str) -> str:
            return reverse(f"{site}:socketsvc_taskrecord_change", args=[task_id])

        state = live_state(workflow, rows)
        result = read_workflow(workflow, rows, using)
        failed_step = workflow.reason.get("step") if workflow.reason else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": str(workflow),
            "subtitle": None,
            "workflow": workflow,
            "svg": graph.draw(rows, url_of),
            "legend": graph.legend(),
            "state": state,
            "live_url": reverse(f"{site}:socketsvc_workflowrecord_live", args=[workflow.id]),
            "cancel_url": reverse(f"{site}:socketsvc_workflowrecord_cancel", args=[workflow.id]),
            "may_cancel": workflow.status == WorkflowStatus.RUNNING
            and self.has_change_permission(request),
            "created_at": admin_time(workflow.created_at),
            "steps": [
                {
                    "number": (row.flow or {}).get("step", 0) + 1,
                    "row": row,
                    "url": url_of(row.id),
                    "live": state["steps"][row.id],
                    "on_error": (row.flow or {}).get("role") == "on_error",
                }
                for row in rows
            ],
            "failed_url": url_of(failed_step) if failed_step else None,
            "return_value": json.dumps(result.return_value, indent=2)
            if workflow.status == WorkflowStatus.SUCCESSFUL
            else None,
        }
        return TemplateResponse(request, "admin/socketsvc/workflow.html", context)

    def live_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Return the workflow's state and every step's, for the page to update in place."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "permission denied"}, status=403)
        workflow = WorkflowRecord.objects.filter(id=object_id).first()
        if workflow is None:
            return JsonResponse({"error": "no such workflow"}, status=404)
        return JsonResponse(live_state(workflow, steps_of(workflow.id, _database(workflow))))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Cancel the workflow (POST, with the change permission); back to its page."""
        workflow = self._workflow(request, object_id)
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        self._cancel(request, workflow)
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:socketsvc_workflowrecord_change", args=[workflow.id])
        )

    def _cancel(self, request: HttpRequest, workflow: WorkflowRecord) -> bool:
        if workflow.status != WorkflowStatus.RUNNING:
            return False
        user = getattr(request, "user", None)
        cancel_workflow(workflow.id, workflow.backend_name, by=str(user) if user else "")
        return True

    @admin.action(description="Cancel selected workflows", permissions=["change"])
    def cancel_workflows(self, request: HttpRequest, queryset: QuerySet[WorkflowRecord]) -> None:
        """Cancel each selected workflow that still runs."""
        stopped = sum(self._cancel(request, workflow) for workflow in queryset)
        self.message_user(
            request,
            f"Cancelled {stopped} workflow(s): steps not started never start, running ones stop.",
            messages.SUCCESS if stopped else messages.WARNING,
        )
