"""Django system checks for risky socketsvc deployments (``manage.py check``)."""

from __future__ import annotations

import grp
import os
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from socketsvc.conf import get_config, supervised
from socketsvc.db.vendors import ops_for

_SHARED_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 (detecting, not using)
_SHARED_TMP = tuple(f"{directory}/" for directory in _SHARED_TMP_DIRS)
_PRIVATE_TMP = (
    "with systemd's PrivateTmp= (set by many units, and by this project's own) the daemon "
    "and each web server that calls it see a /tmp of their own, and calls fail with "
    "ServiceUnavailable"
)
_ELSEWHERE = (
    "Put the socket in a directory of its own: /run/<service>/ in production (the socket "
    "unit or RuntimeDirectory= creates it), a directory of the project in development."
)


def _shared_tmp_warning(socket: str) -> Warning | None:
    """W001, when a socket under /tmp can actually hurt: its name is in /tmp itself,
    or the daemon runs under systemd (PrivateTmp=). A socket in a private directory
    under /tmp (``socketsvc.testing``'s) only matters for deployment (``check --deploy``).
    """
    from socketsvc.systemd import under_systemd

    if os.path.dirname(socket) in _SHARED_TMP_DIRS:
        problem = (
            f"is directly in {os.path.dirname(socket)}, where any local user can take that "
            "name before the daemon binds it (it then refuses to start) or remove it"
        )
    elif socket.startswith(_SHARED_TMP) and under_systemd():
        problem = "is under a shared temporary directory, and this runs under systemd: "
        problem += _PRIVATE_TMP
    else:
        return None
    return Warning(f"SOCKETSVC['SOCKET'] {socket} {problem}.", hint=_ELSEWHERE, id="socketsvc.W001")


@register("socketsvc")
def check_socket(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check the socket's place, mode and group."""
    try:
        config = get_config()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="socketsvc.E001")]
    messages: list[CheckMessage] = []
    shared_tmp = _shared_tmp_warning(config.SOCKET)
    if shared_tmp is not None:
        messages.append(shared_tmp)
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


@register("socketsvc", deploy=True)
def check_socket_for_deployment(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``check --deploy``: a socket anywhere under /tmp, which PrivateTmp= hides from clients."""
    try:
        config = get_config()
    except ImproperlyConfigured:
        return []  # reported by check_socket
    if not config.SOCKET.startswith(_SHARED_TMP) or _shared_tmp_warning(config.SOCKET):
        return []  # not under /tmp, or already reported by check_socket
    return [
        Warning(
            f"SOCKETSVC['SOCKET'] {config.SOCKET} is under a shared temporary directory: "
            f"{_PRIVATE_TMP}.",
            hint=_ELSEWHERE,
            id="socketsvc.W001",
        )
    ]


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


@register("socketsvc")
def check_time_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Tasks with time limits run by a daemon without worker processes: the hard limit cannot
    stop a run stuck in C code or a system call there (``socketsvc.W007``)."""
    try:
        config = get_config()
    except ImproperlyConfigured:
        return []  # reported by check_socket
    if supervised(config) or not any(
        "socketsvc" in str(options.get("BACKEND", ""))
        for options in (getattr(settings, "TASKS", {}) or {}).values()
    ):
        return []
    from django.utils.module_loading import autodiscover_modules

    from socketsvc.tasks.limits import TIMED

    autodiscover_modules("tasks")
    if not TIMED:
        return []
    names = ", ".join(sorted(TIMED)[:5]) + (" ..." if len(TIMED) > 5 else "")
    return [
        Warning(
            f"Tasks declare time limits ({names}), and SOCKETSVC['PROCESSES'] is 1: the soft "
            "limit stops a run at its next Python bytecode, but a run stuck in C code or a "
            "system call cannot be stopped in one process; at its hard limit it is recorded "
            "FAILED (not retried) and goes on in its thread, its result ignored.",
            hint="Run the daemon with worker processes (PROCESSES = 2 or more, or "
            "--processes 2): a stuck run is then stopped by replacing its process.",
            id="socketsvc.W007",
        )
    ]


_LOOPBACK = ("127.", "::1", "localhost")


@register("socketsvc")
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``METRICS_LISTEN`` without the library to serve it (E003), or on an address other
    hosts reach, where anyone may read the figures (W008)."""
    try:
        config = get_config()
    except ImproperlyConfigured:
        return []  # E001 says so
    messages: list[CheckMessage] = []
    wanted = config.METRICS is True or config.METRICS_LISTEN
    if wanted and config.METRICS is not False:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            messages.append(
                Error(
                    "SOCKETSVC['METRICS'] or ['METRICS_LISTEN'] asks for metrics, but "
                    "prometheus_client is not installed: the daemon refuses to start.",
                    hint="pip install 'socketsvc[metrics]'",
                    id="socketsvc.E003",
                )
            )
    listen = config.METRICS_LISTEN
    if listen and not listen.startswith("/"):
        host = listen.rpartition(":")[0].strip("[]")
        if not host.startswith(_LOOPBACK):
            messages.append(
                Warning(
                    f"SOCKETSVC['METRICS_LISTEN'] {listen} serves the metrics, unauthenticated, "
                    "to every host that can reach it.",
                    hint="Listen on 127.0.0.1 or a Unix socket and let the scraper reach it "
                    "there, or firewall the port; the socketsvc.views.metrics view takes a "
                    "bearer token.",
                    id="socketsvc.W008",
                )
            )
    return messages
