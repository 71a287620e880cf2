"""Settings for the test suite: the demo project plus a test app of misbehaving handlers.

Daemon subprocesses get their database from ``DATABASE_URL`` (a throwaway
MariaDB) and their connection policy from ``TEST_CONN_MAX_AGE`` ("none" for
unlimited) and ``TEST_CONN_HEALTH_CHECKS`` ("1"/"0").
"""

import os

import dj_database_url

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, SQLITE_OPTIONS, VAR_DIR

INSTALLED_APPS = [
    *INSTALLED_APPS,
    "tests.testapp",
    *filter(None, os.environ.get("TEST_EXTRA_APPS", "").split(",")),
]

_max_age = os.environ.get("TEST_CONN_MAX_AGE", "0")
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'test.sqlite3'}",
        conn_max_age=None if _max_age == "none" else int(_max_age),  # type: ignore[arg-type]
        conn_health_checks=os.environ.get("TEST_CONN_HEALTH_CHECKS", "0") == "1",
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = SQLITE_OPTIONS
    # A file, not memory: socketsvc.testing's live service opens it from its own process
    # (pytest-django adds each xdist worker's suffix).
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "pytest-test.sqlite3")}
# Django's psycopg pool (CONN_MAX_AGE must then be 0): TEST_DB_POOL="MIN,MAX".
if os.environ.get("TEST_DB_POOL"):
    _min, _max = (int(n) for n in os.environ["TEST_DB_POOL"].split(","))
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": _min, "max_size": _max}
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"].setdefault("OPTIONS", {})["charset"] = "utf8mb4"

# A project's own LOGGING: a handler on the root logger (and, optionally, a
# console handler on stderr), which the daemon must extend, never replace.
if os.environ.get("TEST_LOG_CAPTURE"):
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "capture": {
                "class": "tests.harness.logcapture.JsonLinesHandler",
                "path": os.environ["TEST_LOG_CAPTURE"],
            },
            "console": {"class": "logging.StreamHandler"},
        },
        "root": {"handlers": ["capture", "console"], "level": "INFO"},
    }

# The suite's tasks: the demo's queues, and one with limits of its own (tests/tasks/test_controls.py).
TASKS = {
    "default": {
        "BACKEND": "socketsvc.tasks.SocketServiceBackend",
        "QUEUES": ["default", "reports", "limited"],
        "OPTIONS": {"QUEUE_LIMITS": {"limited": {"concurrency": 2, "rate": "20/s"}}},
    }
}

# The same tasks on RQ: this is all a project changes to move them there
# (the README shows it). TEST_REDIS_DB is the suite's own Redis database.
if os.environ.get("TEST_TASKS_BACKEND") == "rq":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_rq"]
    if "django_tasks" not in INSTALLED_APPS:
        INSTALLED_APPS.append("django_tasks")
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default", "reports"]}}
    _redis = {"HOST": "127.0.0.1", "PORT": 6379, "DB": int(os.environ["TEST_REDIS_DB"])}
    RQ_QUEUES = {"default": _redis, "reports": _redis}

# The suite runs daemons with and without worker processes, whatever the tasks declare.
SILENCED_SYSTEM_CHECKS = ["socketsvc.W007"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

SOCKETSVC = {
    "SOCKET": os.environ.get("SOCKETSVC_SOCKET", "/run/socketsvc-tests/unused.sock"),
    "WORKERS": 4,
    "MAX_MESSAGE_BYTES": 64 * 1024,
    "CALL_TIMEOUT": 20.0,
    # Tests of tasks ask for task workers; the others leave the database to the RPC workers.
    "TASK_WORKERS": 0,
    # The per-minute activity writes a row every few seconds: only the dashboard's tests
    # want it (it would add connections to the counts others read).
    "ACTIVITY": False,
    # The periodic tests choose their schedules; the rest run none (not the demo's either).
    "SCHEDULES": (),
}

# A test's SOCKETSVC values (tests/harness/daemon.py writes them), read again on SIGHUP (the
# settings module is executed again).
if os.environ.get("TEST_SOCKETSVC_FILE"):
    import json
    from pathlib import Path

    SOCKETSVC.update(json.loads(Path(os.environ["TEST_SOCKETSVC_FILE"]).read_text()))

# A worker process started while the test's gate listens waits at it before it is ready
# (TEST_WORKER_START_GATE): a successor held between its start and READY=1.
if os.environ.get("SOCKETSVC_WORKER") and os.environ.get("TEST_WORKER_START_GATE"):
    from tests.testapp.gates import wait_at

    try:
        wait_at(os.environ["TEST_WORKER_START_GATE"])
    except OSError:
        pass  # no gate listens: start at once
