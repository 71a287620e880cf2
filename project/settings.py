"""Settings for the socketsvc demo project.

The database comes from ``DATABASE_URL`` (SQLite in ``project/var`` when unset):

    mysql://user:password@127.0.0.1:3306/shop
    mysql://user:password@%2Frun%2Fmysqld%2Fmysqld.sock/shop      (Unix socket)
    mysql://user:password@localhost/shop?unix_socket=/run/mysqld/mysqld.sock
    postgres://user:password@127.0.0.1:5432/shop
    postgres://user@%2Fvar%2Frun%2Fpostgresql/shop                (Unix socket)
"""

import os
from importlib.util import find_spec
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SOCKETSVC_VAR_DIR", BASE_DIR / "project" / "var"))
# The demo's socket and SQLite database live here; a fresh clone has none yet.
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-insecure-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "socketsvc",
    "project.shop",
]
if find_spec("django.tasks") is None:  # Django 5.2: the Tasks API comes from the backport
    INSTALLED_APPS.append("django_tasks")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# For SQLite: the daemon's threads write concurrently, so take the write lock
# when a transaction begins (waiting for it then works), and let readers
# never wait (WAL).
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL",
}

# Connections are kept for a minute and checked before reuse: socketsvc pings
# a reused connection before each request anyway, and the web process gets
# Django's own health check, so neither meets one the server has dropped.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = SQLITE_OPTIONS
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("charset", "utf8mb4")
    DATABASES["default"]["OPTIONS"].setdefault("isolation_level", "read committed")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

# Background tasks, stored in the database and run by the daemon.
TASKS = {
    "default": {
        "BACKEND": "socketsvc.tasks.SocketServiceBackend",
        "QUEUES": ["default", "reports"],
    }
}

SOCKETSVC = {
    "SOCKET": os.environ.get("SOCKETSVC_SOCKET", str(VAR_DIR / "socketsvc.sock")),
    "WORKERS": 4,
    "CALL_TIMEOUT": 10.0,
}
