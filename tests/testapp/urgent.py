"""A task declared with a priority: socketsvc runs it; RQ's backend refuses it at import."""

from __future__ import annotations

from typing import Any

from .models import Note

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task


@task(queue_name="reports", priority=10)
def urgent_report(name: str) -> dict[str, Any]:
    """Return a small report (a queue of its own, a high priority)."""
    return {"report": name, "notes": Note.objects.count()}
