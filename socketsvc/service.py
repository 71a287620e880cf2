"""Run the daemon: discover handlers, get the socket, (detach,) serve until drained, clean up."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import structlog
from django.db import connections

from . import lifecycle
from .access import socket_group
from .binding import BindError, bind_unix_socket
from .conf import Config
from .daemonize import PidFile, PidFileError, daemonize
from .dispatch import Dispatcher
from .logconfig import reopen_log_files
from .registry import autodiscover
from .server import Server
from .systemd import ActivationError, Notifier, activated_socket, under_systemd

log = structlog.get_logger("socketsvc.service")


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


@dataclass
class Options:
    """How to run, beyond the SOCKETSVC settings."""

    daemonize: bool = False
    pidfile: str | None = None
    log_stream: IO[Any] | None = None


def _mysql_wait_timeout(conn: Any) -> int | None:
    if conn.vendor != "mysql":
        return None
    with conn.cursor() as cursor:
        cursor.execute("SELECT @@SESSION.wait_timeout")
        return int(cursor.fetchone()[0])


def _warn_about_wait_timeout(conn: Any, wait_timeout: int, config: Config) -> None:
    max_age = conn.settings_dict["CONN_MAX_AGE"]
    too_old = max_age is None or max_age > wait_timeout
    if too_old and not conn.settings_dict["CONN_HEALTH_CHECKS"]:
        log.warning(
            "conn_max_age_exceeds_wait_timeout",
            alias=conn.alias,
            conn_max_age=max_age,
            wait_timeout=wait_timeout,
            hint="this daemon pings reused connections, but other processes with these "
            "settings (web workers) will meet dead ones; set CONN_HEALTH_CHECKS=True or "
            "CONN_MAX_AGE below wait_timeout",
        )
    if wait_timeout <= config.DB_CHECK_AFTER_IDLE:
        log.warning(
            "db_check_after_idle_exceeds_wait_timeout",
            alias=conn.alias,
            db_check_after_idle=config.DB_CHECK_AFTER_IDLE,
            wait_timeout=wait_timeout,
            hint="lower SOCKETSVC['DB_CHECK_AFTER_IDLE'] below wait_timeout",
        )


def probe_databases(config: Config) -> bool:
    """Return True if every configured database answers; log what was found. Never raises."""
    ok = True
    for conn in connections.all():
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            wait_timeout = _mysql_wait_timeout(conn)
        except Exception as exc:
            ok = False
            log.warning(
                "database_unreachable",
                alias=conn.alias,
                error=str(exc),
                hint="requests that need it get error -32001 until it is back",
            )
            continue
        log.info("database_reachable", alias=conn.alias, vendor=conn.vendor)
        if wait_timeout is not None:
            _warn_about_wait_timeout(conn, wait_timeout, config)
    lifecycle.close_thread_connections()
    return ok


def _wait_for_databases(config: Config, server: Server, stop: threading.Event) -> None:
    """Probe until the databases answer, then mark the server ready (its own thread)."""
    delay = 0.5
    while not stop.is_set():
        if probe_databases(config):
            server.mark_ready()
            return
        stop.wait(delay)
        delay = min(delay * 2, 10.0)


@dataclass
class Listener:
    """The listening socket and how to let go of it."""

    sock: socket.socket
    release: Callable[[], None]
    preserve: list[int]
    activated: bool

    @property
    def group(self) -> int | None:
        """Return the gid owning the socket file (the default allowed group)."""
        name = self.sock.getsockname()
        return socket_group(name) if isinstance(name, str) and name else None


def _acquire_listener(config: Config) -> Listener:
    try:
        sock = activated_socket(config.ACTIVATION_NAME)
    except ActivationError as exc:
        raise StartupError(str(exc)) from None
    if sock is not None:
        # systemd (or another manager) owns the socket file: never unlink it.
        return Listener(sock, lambda: None, [sock.fileno()], activated=True)
    try:
        bound = bind_unix_socket(
            config.SOCKET, config.SOCKET_MODE, config.SOCKET_GROUP, config.BACKLOG
        )
    except BindError as exc:
        raise StartupError(str(exc)) from None
    return Listener(bound.sock, bound.close, [bound.sock.fileno(), bound.lock_fd], False)


def run(
    config: Config,
    options: Options | None = None,
    reload_config: Callable[[], Config] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit status."""
    options = options or Options()
    registry = autodiscover()
    pidfile = PidFile(options.pidfile) if options.pidfile else None
    detach = options.daemonize and not under_systemd()
    if options.daemonize and not detach:
        log.warning("not_daemonizing_under_systemd", hint="drop --daemonize from the unit")
    try:
        if pidfile is not None:
            pidfile.check()
    except PidFileError as exc:
        raise StartupError(str(exc)) from None
    listener = _acquire_listener(config)
    # Nothing may be shared with worker threads or across a fork.
    lifecycle.close_thread_connections()
    if detach:
        stream = options.log_stream
        daemonize([*listener.preserve, *([stream] if stream else [])], stream)
    if pidfile is not None:
        pidfile.write()

    def reload() -> Config:
        reopen_log_files()
        if reload_config is None:
            return server.config
        return reload_config()

    server = Server(
        listener.sock,
        config,
        Dispatcher(registry, config.DB_CHECK_AFTER_IDLE),
        on_listener_closed=listener.release,
        reload_config=reload,
        notifier=Notifier(),
        socket_gid=listener.group,
    )
    server.install_signal_handlers()
    log.info(
        "listening",
        socket="(activated)" if listener.activated else config.SOCKET,
        mode=None if listener.activated else f"{config.SOCKET_MODE:#o}",
        workers=config.WORKERS,
        handlers=len(registry),
        pid=os.getpid(),
        daemonized=detach,
    )
    stop_probe = threading.Event()
    threading.Thread(
        target=_wait_for_databases,
        args=(config, server, stop_probe),
        name="socketsvc-readiness",
        daemon=True,
    ).start()
    try:
        clean = server.serve_forever()
    finally:
        stop_probe.set()
        server.close()
        listener.release()
        if pidfile is not None:
            pidfile.remove()
    log.info("stopped", clean=clean)
    return 0 if clean else 1
