"""Test helpers for projects that use socketsvc: the real thing, in two sizes.

* :func:`in_process` runs every ``call()``/``notify()`` of the test through
  the daemon's own request path in the test's thread: the JSON encoding, the
  param checks, the request lifecycle and the error mapping, on the test's
  database connection, so it sees the test's data (``TestCase`` included).
  Tasks enqueued meanwhile run when the test calls ``run_tasks()``.
* :class:`LiveService` runs a real ``runsocketservice`` process against the
  test database on a private socket: admin buttons, tasks and schedules as in
  production. A separate process sees only committed data, so it goes with
  ``TransactionTestCase`` (or pytest-django's ``transactional_db``).

:class:`InProcessMixin` and :class:`LiveServiceMixin` bring them to Django
test cases; the pytest plugin (registered by the package) gives the fixtures
``socketsvc_in_process`` and ``socketsvc_live``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from socketsvc.testing.inprocess import InProcess, InProcessMixin, in_process
    from socketsvc.testing.live import LiveService, LiveServiceMixin

__all__ = ["InProcess", "InProcessMixin", "LiveService", "LiveServiceMixin", "in_process"]

# Imported on first use: the pytest plugin in this package loads before Django is set up.
_HOME = {
    "InProcess": "inprocess",
    "InProcessMixin": "inprocess",
    "in_process": "inprocess",
    "LiveService": "live",
    "LiveServiceMixin": "live",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
