"""Django system checks for risky socketsvc deployments (``manage.py check``)."""

from __future__ import annotations

import grp
import os
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from .conf import get_config

# MySQL's and MariaDB's default wait_timeout; the daemon reads the real value
# at startup and logs a warning if a setting exceeds it.
DEFAULT_WAIT_TIMEOUT = 28800
_SHARED_TMP = ("/tmp/", "/var/tmp/", "/dev/shm/")  # noqa: S108 (detecting, not using)


@register("socketsvc")
def check_socket(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check the socket's place, mode and group."""
    try:
        config = get_config()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="socketsvc.E001")]
    messages: list[CheckMessage] = []
    if config.SOCKET.startswith(_SHARED_TMP):
        messages.append(
            Warning(
                f"SOCKETSVC['SOCKET'] {config.SOCKET} is in a shared temporary directory.",
                hint="Any user can create files there, and systemd's PrivateTmp= gives "
                "each service its own /tmp, so clients may not see the socket. Use a "
                "directory of its own, e.g. /run/socketsvc/.",
                id="socketsvc.W001",
            )
        )
    if config.SOCKET_MODE & 0o007:
        messages.append(
            Warning(
                f"SOCKETSVC['SOCKET_MODE'] {config.SOCKET_MODE:#o} lets every local user "
                "connect and call every handler.",
                hint="Use 0o660 and put the web server's user in SOCKET_GROUP.",
                id="socketsvc.W002",
            )
        )
    if isinstance(config.SOCKET_GROUP, str):
        try:
            grp.getgrnam(config.SOCKET_GROUP)
        except KeyError:
            messages.append(
                Error(
                    f"SOCKETSVC['SOCKET_GROUP'] {config.SOCKET_GROUP!r} is not a group on "
                    "this host.",
                    hint="Create the group or correct the name.",
                    id="socketsvc.E002",
                )
            )
    directory = os.path.dirname(config.SOCKET)
    try:
        world_writable = bool(os.stat(directory).st_mode & 0o002)
    except OSError:
        world_writable = False
    if world_writable and not config.SOCKET.startswith(_SHARED_TMP):
        messages.append(
            Warning(
                f"The socket's directory {directory} is world-writable.",
                hint="Any user could replace the socket with their own. Use a directory "
                "writable only by the service user.",
                id="socketsvc.W003",
            )
        )
    return messages


@register("socketsvc")
def check_connection_age(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Warn about MySQL connections kept longer than the server keeps idle ones."""
    try:
        config = get_config()
    except ImproperlyConfigured:
        return []  # reported by check_socket
    messages: list[CheckMessage] = []
    for alias, database in settings.DATABASES.items():
        if database.get("ENGINE") != "django.db.backends.mysql":
            continue
        max_age = database.get("CONN_MAX_AGE", 0)
        too_old = max_age is None or max_age > DEFAULT_WAIT_TIMEOUT
        if too_old and not database.get("CONN_HEALTH_CHECKS", False):
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] keeps connections for "
                    f"{'ever' if max_age is None else f'{max_age} s'}, longer than "
                    f"MySQL's default wait_timeout ({DEFAULT_WAIT_TIMEOUT} s), without "
                    "CONN_HEALTH_CHECKS.",
                    hint="socketsvc checks its own connections, but other processes with "
                    "these settings will fail with 'MySQL server has gone away'. Set "
                    "CONN_HEALTH_CHECKS=True or a CONN_MAX_AGE below wait_timeout.",
                    id="socketsvc.W004",
                )
            )
    if config.DB_CHECK_AFTER_IDLE >= DEFAULT_WAIT_TIMEOUT:
        messages.append(
            Warning(
                f"SOCKETSVC['DB_CHECK_AFTER_IDLE'] ({config.DB_CHECK_AFTER_IDLE:g} s) is not "
                f"below MySQL's default wait_timeout ({DEFAULT_WAIT_TIMEOUT} s).",
                hint="A connection idle that long is dead when reused without a check. "
                "Keep it well below wait_timeout (0 checks every reused connection).",
                id="socketsvc.W005",
            )
        )
    return messages
