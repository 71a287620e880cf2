"""Django system checks for risky socketsvc deployments (``manage.py check``)."""

from __future__ import annotations

import grp
import os
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from socketsvc.conf import get_config
from socketsvc.db.vendors import ops_for

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
def check_databases(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Ask each database's vendor module about risky connection settings."""
    try:
        config = get_config()
    except ImproperlyConfigured:
        return []  # reported by check_socket
    messages: list[CheckMessage] = []
    for alias, database in settings.DATABASES.items():
        vendor = str(database.get("ENGINE", "")).rsplit(".", 1)[-1]
        messages.extend(ops_for(vendor).check(alias, database, config))
    return messages
