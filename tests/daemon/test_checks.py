"""System checks: each fires on its risky setting and stays silent on the demo's settings."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

from tests.harness.daemon import manage
from tests.harness.waiting import poll

MYSQL = {
    "ENGINE": "django.db.backends.mysql",
    "NAME": "app",
    "CONN_MAX_AGE": 0,
    "CONN_HEALTH_CHECKS": False,
}


def socketsvc_messages(deploy: bool = False) -> list[checks.CheckMessage]:
    """The socketsvc checks' messages, but W007: the suite's own tasks declare time limits
    (the fault campaign's), which tests/unit/tasks/test_limits.py checks on its own."""
    found = checks.run_checks(tags=["socketsvc"], include_deployment_checks=deploy)
    return [m for m in found if m.id != "socketsvc.W007"]


def socketsvc_ids() -> set[str]:
    return {m.id for m in socketsvc_messages()}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"SOCKET": "/tmp/socketsvc.sock"}, "socketsvc.W001"),
        ({"SOCKET": "/run/app/s.sock", "SOCKET_MODE": 0o666}, "socketsvc.W002"),
        ({"SOCKET": "/run/app/s.sock", "SOCKET_MODE": 0o662}, "socketsvc.W002"),
        ({"SOCKET": "/run/app/s.sock", "SOCKET_GROUP": "no-such-group-x"}, "socketsvc.E002"),
        ({"SOCKET": "relative.sock"}, "socketsvc.E001"),
        ({"SOCKET": "/run/app/s.sock", "WORKRES": 4}, "socketsvc.E001"),
    ],
    ids=["tmp", "mode-0666", "mode-world-write", "no-group", "relative", "typo"],
)
def test_each_socket_check_fires_on_its_bad_setting(setting, expected):
    """A risky SOCKETSVC value produces its check message, and only the expected one."""
    with override_settings(SOCKETSVC=setting):
        assert socketsvc_ids() == {expected}


def test_a_private_directory_under_tmp_warns_only_for_deployment(monkeypatch):
    """/tmp/<private dir>/s.sock (socketsvc.testing's) is quiet, except with check --deploy."""
    for name in ("NOTIFY_SOCKET", "LISTEN_PID", "INVOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    with override_settings(SOCKETSVC={"SOCKET": "/tmp/socketsvc-x1/s.sock"}):
        assert socketsvc_ids() == set()
        deploy = socketsvc_messages(deploy=True)
    assert [m.id for m in deploy] == ["socketsvc.W001"]
    assert "PrivateTmp=" in deploy[0].msg


def test_a_socket_under_tmp_warns_under_systemd(monkeypatch):
    """Started by systemd, any socket under /tmp is W001 (PrivateTmp=), once."""
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    with override_settings(SOCKETSVC={"SOCKET": "/tmp/socketsvc-x1/s.sock"}):
        found = socketsvc_messages(deploy=True)
    assert [m.id for m in found] == ["socketsvc.W001"]
    assert "PrivateTmp=" in found[0].msg


def test_world_writable_socket_directory_is_flagged():
    """A socket in a world-writable directory (not a known /tmp) gets W003."""
    directory = Path(tempfile.mkdtemp(prefix="socketsvc-check-", dir=_not_shared_tmp()))
    try:
        os.chmod(directory, 0o777)
        with override_settings(SOCKETSVC={"SOCKET": str(directory / "s.sock")}):
            assert socketsvc_ids() == {"socketsvc.W003"}
    finally:
        shutil.rmtree(directory)


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    ("database", "fires"),
    [
        ({"CONN_MAX_AGE": None}, True),
        ({"CONN_MAX_AGE": 30000}, True),
        ({"CONN_MAX_AGE": None, "CONN_HEALTH_CHECKS": True}, False),
        ({"CONN_MAX_AGE": 600}, False),
        ({"CONN_MAX_AGE": 0}, False),
    ],
    ids=["forever", "over-wait-timeout", "forever-with-checks", "below", "zero"],
)
def test_conn_max_age_above_wait_timeout_without_health_checks(database, fires):
    """CONN_MAX_AGE above MySQL's wait_timeout without health checks gives W004."""
    with override_settings(
        DATABASES={"default": {**MYSQL, **database}}, SOCKETSVC={"SOCKET": "/run/app/s.sock"}
    ):
        assert ("socketsvc.W004" in socketsvc_ids()) is fires


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(("engine", "fires"), [(MYSQL, True), ({}, False)], ids=["mysql", "sqlite"])
def test_check_after_idle_above_wait_timeout_warns_for_mysql(engine, fires):
    """DB_CHECK_AFTER_IDLE at MySQL's wait_timeout gives W005, where a MySQL database is used."""
    databases = {"default": engine} if engine else None
    overrides = {"DATABASES": databases} if databases else {}
    with override_settings(
        SOCKETSVC={"SOCKET": "/run/app/s.sock", "DB_CHECK_AFTER_IDLE": 30000}, **overrides
    ):
        assert ("socketsvc.W005" in socketsvc_ids()) is fires


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    ("options", "fires"),
    [
        ({}, True),
        ({"transaction_mode": "DEFERRED"}, True),
        ({"transaction_mode": "IMMEDIATE"}, False),
    ],
    ids=["default", "deferred", "immediate"],
)
def test_sqlite_with_deferred_transactions_warns(options, fires):
    """SQLite whose transactions start DEFERRED gives W006 (concurrent writers fail at once)."""
    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3", "OPTIONS": options}
    with override_settings(
        DATABASES={"default": database}, SOCKETSVC={"SOCKET": "/run/app/s.sock"}
    ):
        assert ("socketsvc.W006" in socketsvc_ids()) is fires


def test_demo_settings_pass_every_check():
    """manage.py check on the demo project reports no issue at all.

    The demo keeps its socket beside the checkout; a checkout under /tmp would
    rightly get W001, so its runtime directory is put elsewhere here.
    """
    var_dir = Path(tempfile.mkdtemp(prefix="socketsvc-demo-", dir=_not_shared_tmp()))
    env = {"DJANGO_SETTINGS_MODULE": "project.settings", "SOCKETSVC_VAR_DIR": str(var_dir)}
    try:
        done = manage("check", env=env, unset=("DATABASE_URL", "SOCKETSVC_SOCKET"))
    finally:
        shutil.rmtree(var_dir)
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


def _not_shared_tmp() -> str:
    return "/run" if os.access("/run", os.W_OK) else str(Path.home())


def test_daemon_logs_check_warnings_as_json(start_daemon, sqlite_url):
    """The daemon reports a check warning as a log line in its own format."""
    daemon = start_daemon(sqlite_url, SOCKET="/tmp/socketsvc-check-test.sock")
    events = [e for e in daemon.log_events() if e["event"] == "system_check"]
    assert [e["id"] for e in events] == ["socketsvc.W001"]


def test_worker_processes_do_not_repeat_the_masters_check_warnings(start_daemon, sqlite_url):
    """With --processes 2 a warning is logged once (by the master), not once per process."""
    daemon = start_daemon(sqlite_url, SOCKET="/tmp/socketsvc-check-test2.sock", PROCESSES=2)
    poll(lambda: any(e.get("processes") == 2 for e in daemon.log_events() if e["event"] == "ready"))
    events = [e for e in daemon.log_events() if e["event"] == "system_check"]
    assert [e["id"] for e in events] == ["socketsvc.W001"]
