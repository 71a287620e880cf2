"""The per-minute activity the dashboard draws: written by every process, added up.

A daemon with two worker processes (both write the same minutes' rows, so the
database's upsert adds them up) answers calls and runs tasks; within a flush or
two the activity table holds exactly those calls, errors, runs and outcomes, on
each database socketsvc supports. A database outage is counted while it lasts
and written once the database is back.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from socketsvc.client import DatabaseUnavailable
from tests.harness.daemon import manage
from tests.harness.waiting import poll

VENDORS = ("mariadb", "postgresql")


def _totals(db: Any) -> dict[tuple[str, str], float]:
    rows = db.query(
        "SELECT series, label, SUM(value) FROM socketsvc_activity GROUP BY series, label",
        db="socketsvc_test",
    )
    return {(series, label): float(total) for series, label, total in rows}


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_two_processes_add_up_their_minutes(clean_tasks, start_daemon, taskclient):
    url = clean_tasks.url()
    daemon = start_daemon(url, "--processes", "2", TASK_WORKERS=2, ACTIVITY=True)
    client = taskclient(url, daemon.socket)
    for n in range(30):
        daemon.call("testapp.echo", n)
    for _ in range(3):
        with pytest.raises(Exception, match="boom"):
            daemon.call("testapp.fail")
    ids = [client.enqueue("add", 1, n)["id"] for n in range(6)]
    ids.append(client.enqueue("fail", "no")["id"])
    for task_id in ids:
        client.finished(task_id)

    def written() -> dict[tuple[str, str], float] | None:
        totals = _totals(clean_tasks)
        done = totals.get(("started", "default"), 0) == 7 and totals.get(("calls", ""), 0) >= 33
        return totals if done else None

    totals = poll(written, timeout=40, why=lambda: str(_totals(clean_tasks)))
    # The calls the test made, and the daemon's own (the harness's pings, the wake-ups).
    assert totals[("call_errors", "")] == 3
    assert totals[("succeeded", "default")] == 6
    assert totals[("failed", "default")] == 1
    assert totals[("duration", "default")] == 7
    assert totals[("latency", "default")] == 7
    rows = clean_tasks.query(
        "SELECT COUNT(*), COUNT(DISTINCT minute) FROM socketsvc_activity WHERE series = 'calls'",
        db="socketsvc_test",
    )
    # One row per minute however many processes counted in it.
    assert rows[0][0] == rows[0][1]


def test_an_outage_is_counted_and_written_once_the_database_is_back(private_mariadb, start_daemon):
    """The database stops under a daemon: a call gets -32001; once the server is back (no
    call needed: the daemon watches it), the minutes of the outage are in the activity table
    and the metrics count one outage and its seconds."""
    daemon = start_daemon(
        private_mariadb.url(), conn_max_age="60", DB_UNAVAILABLE_WAIT=0, ACTIVITY=True
    )
    private_mariadb.stop()
    try:
        with pytest.raises(DatabaseUnavailable):
            daemon.call("testapp.count_notes")
        poll(lambda: daemon.call("rpc.status")["databases"]["default"]["available"] is False)
    finally:
        private_mariadb.start()
    poll(lambda: daemon.call("rpc.status")["databases"]["default"] == {"available": True})

    def down() -> float:
        rows = private_mariadb.query(
            "SELECT SUM(value) FROM socketsvc_activity WHERE series = 'db_down' "
            "AND label = 'default'",
            db="socketsvc_test",
        )
        return float(rows[0][0] or 0)

    seconds = poll(down, timeout=30, why=daemon.log)
    ended = [e for e in daemon.log_events() if e["event"] == "database_available_again"]
    assert seconds == pytest.approx(sum(e["outage_s"] for e in ended), abs=0.01)
    shown = manage("socketctl", "--socket", daemon.socket, "metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(shown.stdout)
        for s in family.samples
    }
    assert samples[("socketsvc_db_outages_total", (("alias", "default"),))] == len(ended)
    assert samples[("socketsvc_db_outage_seconds_total", (("alias", "default"),))] == (
        pytest.approx(seconds, abs=0.01)
    )
    assert samples[("socketsvc_db_down", (("alias", "default"),))] == 0
