"""Tasks that make workflows in the tests: each records, as Marker rows, when its code ran.

``flow|<label>|<step>|start|<epoch>`` and ``…|end|<epoch>`` give each run's
interval from inside it; ``once|<label>`` rows make a second run of a callback
fail on its insert.
"""

from __future__ import annotations

import time
from typing import Any

from socketsvc.tasks import progress

from .models import Marker

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task


def _stamp(label: str, name: str, edge: str) -> None:
    Marker.objects.create(key=f"flow|{label}|{name}|{edge}|{time.time():.6f}")


@task
def add(value: int, amount: int) -> int:
    """Return *value* + *amount* (a chain passes *value* along)."""
    return value + amount


@task
def mark(label: str, name: str, value: Any = None, seconds: float = 0.0) -> Any:
    """Record this run's interval under *label*/*name*; return *value* (default: *name*)."""
    _stamp(label, name, "start")
    for n in range(int(seconds * 10)):
        progress(n, int(seconds * 10), note=name)
        time.sleep(0.1)
    time.sleep(seconds - int(seconds * 10) / 10)
    _stamp(label, name, "end")
    return name if value is None else value


@task
def then(received: Any, label: str, name: str) -> Any:
    """Record this run (after the steps it received from); return what it received."""
    _stamp(label, name, "start")
    _stamp(label, name, "end")
    return received


@task
def once(received: list[Any], label: str) -> dict[str, Any]:
    """A callback that can run only once per *label* (a second run fails on its insert)."""
    Marker.objects.create(key=f"once|{label}")
    _stamp(label, "callback", "start")
    _stamp(label, "callback", "end")
    return {"count": len(received), "results": received}


@task
def fail(label: str, name: str) -> None:
    """Record this run, then fail."""
    _stamp(label, name, "start")
    raise RuntimeError(f"step {name} of {label} fails")


@task
def on_error(info: dict[str, Any], label: str) -> dict[str, Any]:
    """The on_error step: record that it ran, once per *label*."""
    Marker.objects.create(key=f"once|{label}|on_error")
    return info
