"""Settings for every benchmarked server: the demo project, tuned by environment variables.

``BENCH_CONN_MAX_AGE``, ``BENCH_CONN_HEALTH_CHECKS`` (the demo: 60 and on) and
``BENCH_DB_CHECK_AFTER_IDLE`` (default 1.0, socketsvc's default) let one run
compare connection policies; the database comes from ``DATABASE_URL`` as in
the demo. ``DEBUG`` is off and the middleware list is empty so the Django
view behind gunicorn pays only for what the other servers pay for too.
"""

import os
from dataclasses import fields

import dj_database_url

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, SOCKETSVC, VAR_DIR
from socketsvc.conf import Config

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
MIDDLEWARE: list[str] = []
# The admin needs its middleware; nothing here serves the admin.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]
ROOT_URLCONF = "bench.urls"

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("BENCH_CONN_MAX_AGE", "0")),
        conn_health_checks=os.environ.get("BENCH_CONN_HEALTH_CHECKS") == "1",
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"].setdefault("OPTIONS", {})["charset"] = "utf8mb4"
    DATABASES["default"]["OPTIONS"]["isolation_level"] = "read committed"

SOCKETSVC = {
    **SOCKETSVC,
    "DB_CHECK_AFTER_IDLE": float(os.environ.get("BENCH_DB_CHECK_AFTER_IDLE", "1.0")),
    "IDLE_TIMEOUT": 600.0,
    "MAX_CONNECTIONS": 4096,
}
# The idle-connections figure holds 1,000 connections from one user.
if "MAX_CONNECTIONS_PER_UID" in {f.name for f in fields(Config)}:
    SOCKETSVC["MAX_CONNECTIONS_PER_UID"] = 4096
