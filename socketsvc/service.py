"""Run the daemon: discover handlers, bind, serve until drained, clean up."""

from __future__ import annotations

import os

import structlog
from django.db import connections

from . import lifecycle
from .binding import BindError, bind_unix_socket
from .conf import Config
from .dispatch import Dispatcher
from .registry import autodiscover
from .server import Server

log = structlog.get_logger("socketsvc.service")


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


def probe_database() -> None:
    """Log whether each configured database answers; never raise (the daemon starts anyway)."""
    for conn in connections.all():
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            log.info("database_reachable", alias=conn.alias, vendor=conn.vendor)
        except Exception as exc:
            log.warning(
                "database_unreachable_at_startup",
                alias=conn.alias,
                error=str(exc),
                hint="requests that need it get error -32001 until it is back",
            )
    lifecycle.close_thread_connections()


def run(config: Config) -> int:
    """Serve on ``config.SOCKET`` until SIGTERM/SIGINT; return the process exit status."""
    registry = autodiscover()
    probe_database()
    try:
        bound = bind_unix_socket(
            config.SOCKET, config.SOCKET_MODE, config.SOCKET_GROUP, config.BACKLOG
        )
    except BindError as exc:
        raise StartupError(str(exc)) from None
    # No connection may be shared with the worker threads.
    lifecycle.close_thread_connections()
    server = Server(
        bound.sock,
        config,
        Dispatcher(registry, config.DB_CHECK_AFTER_IDLE),
        on_listener_closed=bound.close,
    )
    server.install_signal_handlers()
    log.info(
        "listening",
        socket=config.SOCKET,
        mode=f"{config.SOCKET_MODE:#o}",
        workers=config.WORKERS,
        methods=len(registry),
        pid=os.getpid(),
    )
    try:
        clean = server.serve_forever()
    finally:
        server.close()
        bound.close()
    log.info("stopped", clean=clean)
    return 0 if clean else 1
