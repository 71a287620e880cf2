"""Every field ``rpc.status`` returns is documented in docs/status.md."""

from __future__ import annotations

import re
from typing import Any

from tests.harness.daemon import REPO
from tests.harness.waiting import poll

PAGE = REPO / "docs" / "status.md"


def documented() -> set[str]:
    """The names in the first column of the page's tables (``a``, ``a.b``; ``x``, ``y``)."""
    names: set[str] = set()
    for line in PAGE.read_text().splitlines():
        cell = line.split("|")[1] if line.startswith("| `") else ""
        for name in re.findall(r"`([a-z_.]+)`", cell):
            names.update({name, name.partition(".")[0]})  # tasks.x documents tasks too
    return names


def fields(status: dict[str, Any]) -> set[str]:
    """The top-level fields, and those of ``tasks`` as ``tasks.<name>``."""
    found = set(status)
    found.update(f"tasks.{name}" for name in status.get("tasks") or {})
    return found


def test_every_field_of_a_daemon_with_tasks_and_processes_is_documented(start_daemon, sqlite_url):
    daemon = start_daemon(sqlite_url, PROCESSES=2, TASK_WORKERS=1)

    def whole() -> dict[str, Any] | None:
        status: dict[str, Any] = daemon.call("rpc.status")
        return status if len(status.get("processes", [])) == 2 else None

    status = poll(whole, why=daemon.log)
    assert status["tasks"] is not None and status["master"] is not None
    missing = sorted(fields(status) - documented())
    assert missing == []
    row_fields = set(status["processes"][0]) | set(status["total"])
    on_page = PAGE.read_text()
    assert [name for name in sorted(row_fields) if f"`{name}`" not in on_page] == []


def test_every_field_of_a_single_process_is_documented(start_daemon, sqlite_url):
    status = start_daemon(sqlite_url).call("rpc.status")
    assert sorted(fields(status) - documented()) == []
