"""Leases and fencing: a daemon silent past its lease never runs a task at the same time as the
daemon that took it over, and nothing it writes late is recorded.

Real daemons on a real MariaDB or PostgreSQL, frozen with SIGSTOP for longer than a short
TASK_LEASE (3 s, renewed every 0.5 s), as a GC stall, a suspended VM or a long outage would.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.harness.daemon import REPO, manage_env
from tests.harness.waiting import poll

VENDORS = ("mariadb", "postgresql")
LEASE = {"TASK_LEASE": 3, "TASK_HEARTBEAT": 0.5}


@pytest.fixture
def start_leased(clean_tasks, start_daemon, short_tmp):
    """start_leased(name, workers=1): a task daemon with the short lease, on its own socket."""

    def start(name: str, workers: int = 1):
        return start_daemon(
            clean_tasks.url(),
            socket_path=str(short_tmp / f"{name}.sock"),
            TASK_WORKERS=workers,
            **LEASE,
        )

    return start


def worker_id_of(daemon) -> str:
    event = poll(
        lambda: next(
            (e for e in daemon.log_events() if e.get("event") == "task_runner_started"), None
        )
    )
    return str(event["worker_id"])


def stopped_at(db, worker_id: str) -> object:
    rows = db.query(
        "SELECT stopped_at FROM socketsvc_worker WHERE id = %s", [worker_id], db="socketsvc_test"
    )
    return rows[0][0] if rows else None


def markers(db, key: str) -> int:
    return db.query(
        f"SELECT COUNT(*) FROM testapp_marker WHERE {db.quote('key')} = %s",
        [key],
        db="socketsvc_test",
    )[0][0]


def test_the_kill_switch_ends_a_frozen_process_at_its_deadline():
    """The kernel's timer kills a process that SIGSTOPped itself once its deadline comes: a
    frozen process cannot be relied on to stop itself."""
    frozen = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, django\n"
            "django.setup()\n"
            "from socketsvc.tasks.daemon.lease import KillSwitch\n"
            "switch = KillSwitch()\n"
            "assert switch.available\n"
            "switch.arm(0.5)\n"
            "os.kill(os.getpid(), signal.SIGSTOP)\n"
            "print('resumed')\n",
        ],
        cwd=REPO,
        env=manage_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert frozen.wait(20) == -signal.SIGKILL
        assert frozen.stdout is not None and frozen.stdout.read() == ""
    finally:
        frozen.kill()


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_daemon_frozen_past_its_lease_never_finishes_the_run_given_to_another(
    clean_tasks, start_leased, taskclient, gate
):
    """A is frozen (SIGSTOP) mid-task for longer than its lease; B declares it lost and runs
    the task again. A is killed by the kernel while frozen, before B may start, so its run
    never resumes: one marker, the task SUCCESSFUL on its second attempt."""
    first = start_leased("a")
    client = taskclient(clean_tasks.url(), first.socket)
    queued = client.enqueue("hold_then_mark_retried", gate.path, "frozen")
    gate.wait_for(1)
    first_id = worker_id_of(first)
    second = start_leased("b")
    first.signal(signal.SIGSTOP)
    try:
        gate.wait_for(2, timeout=30)  # B runs it again, once A's lease expired
    finally:
        first.signal(signal.SIGCONT)
    assert first.process.wait(20) == -signal.SIGKILL
    gate.open()
    done = client.finished(queued["id"])
    assert done["status"] == "SUCCESSFUL", done["errors"]
    assert done["attempts"] == 2
    assert [e["exception_class_path"] for e in done["errors"]] == ["socketsvc.tasks.WorkerLost"]
    assert markers(clean_tasks, "frozen") == 1
    assert stopped_at(clean_tasks, first_id) is not None
    assert second.process.poll() is None


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_daemon_declared_lost_while_idle_registers_again_and_runs_each_task_once(
    clean_tasks, start_leased, taskclient
):
    """A is frozen while idle for longer than its lease and B marks it stopped. Resumed, A
    learns it at its next renewal, claims nothing under its old name, registers again, and
    every task it then takes runs once (none is taken back from it as lost)."""
    first = start_leased("a", workers=2)
    first_id = worker_id_of(first)
    start_leased("b")
    first.signal(signal.SIGSTOP)
    try:
        poll(lambda: stopped_at(clean_tasks, first_id) is not None, timeout=30)
    finally:
        first.signal(signal.SIGCONT)
    poll(
        lambda: any(e.get("event") == "task_runner_registered_again" for e in first.log_events()),
        why=first.log,
    )
    client = taskclient(clean_tasks.url(), first.socket)
    ids = [client.enqueue("mark", f"after-{n}")["id"] for n in range(30)]
    results = [client.finished(result_id) for result_id in ids]
    assert {r["status"] for r in results} == {"SUCCESSFUL"}
    assert all(r["attempts"] == 1 and r["errors"] == [] for r in results)
    assert first.process.poll() is None
    events = [e.get("event") for e in first.log_events()]
    assert "task_daemon_declared_lost" in events


@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)
def test_a_run_the_drain_gave_up_on_is_not_run_again_while_its_process_lives(
    clean_tasks, start_daemon, short_tmp, taskclient, gate
):
    """A is told to stop while a task it runs holds at the gate past DRAIN_TIMEOUT: the drain
    gives up on it, and the run goes on in its thread until A's process ends. B takes the
    task only once A has exited (never beside the run still in A), and runs it to success."""
    first = start_daemon(
        clean_tasks.url(),
        socket_path=str(short_tmp / "a.sock"),
        TASK_WORKERS=1,
        DRAIN_TIMEOUT=1,
        **LEASE,
    )
    client = taskclient(clean_tasks.url(), first.socket)
    queued = client.enqueue("hold_then_mark_retried", gate.path, "abandoned")
    gate.wait_for(1)
    start_daemon(clean_tasks.url(), socket_path=str(short_tmp / "b.sock"), TASK_WORKERS=1, **LEASE)
    first.signal(signal.SIGTERM)
    gate.wait_for(2, timeout=30)  # B runs it again
    assert first.process.poll() is not None, "B started the task while A's run went on"
    gate.open()
    done = client.finished(queued["id"])
    assert done["status"] == "SUCCESSFUL", done["errors"]
    assert done["attempts"] == 2
    assert markers(clean_tasks, "abandoned") == 1
    assert any(e.get("event") == "task_runs_abandoned" for e in first.log_events())
