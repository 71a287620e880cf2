"""Run the daemon: discover handlers, take the socket, (detach,) serve until drained, clean up.

This is also where signals mean something: SIGTERM and SIGINT drain (a second
one stops at once), SIGHUP reloads ``SOCKETSVC`` and reopens the log file.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import structlog
from django.db import connections

from . import backends, dbwait, lifecycle
from .backends import ops_for
from .conf import Config, reloaded, supervised
from .daemonize import PidFile, PidFileError, daemonize
from .dispatch import Dispatcher
from .health import Health
from .listener import Listener, ListenerError
from .logconfig import reopen_log_files, set_process_slot
from .loop import Loop
from .processes import WAKE_SIGNAL, WorkerInfo, WorkerRole, die_with_master
from .registry import autodiscover
from .rlimits import raise_open_files
from .signals import SignalWatch
from .systemd import under_systemd

log = structlog.get_logger("socketsvc.service")


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


@dataclass
class Options:
    """How to run, beyond the SOCKETSVC settings."""

    daemonize: bool = False
    pidfile: str | None = None
    log_stream: IO[Any] | None = None
    # Set in a worker process started by a master (socketsvc.supervisor).
    worker: WorkerInfo | None = None
    # What a master passes on to the workers it starts.
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    worker_args: list[str] = dataclasses.field(default_factory=list)


def _warn_about_idle_timeout(conn: Any, idle_timeout: int, config: Config) -> None:
    max_age = conn.settings_dict["CONN_MAX_AGE"]
    too_old = max_age is None or max_age > idle_timeout
    if too_old and not conn.settings_dict["CONN_HEALTH_CHECKS"]:
        log.warning(
            "conn_max_age_exceeds_wait_timeout",
            alias=conn.alias,
            conn_max_age=max_age,
            wait_timeout=idle_timeout,
            hint="this daemon checks reused connections, but other processes with these "
            "settings (web workers) will meet dead ones; set CONN_HEALTH_CHECKS=True or "
            "CONN_MAX_AGE below the server's idle timeout",
        )
    if idle_timeout <= config.DB_CHECK_AFTER_IDLE:
        log.warning(
            "db_check_after_idle_exceeds_wait_timeout",
            alias=conn.alias,
            db_check_after_idle=config.DB_CHECK_AFTER_IDLE,
            wait_timeout=idle_timeout,
            hint="lower SOCKETSVC['DB_CHECK_AFTER_IDLE'] below the server's idle timeout",
        )


def probe_databases(config: Config) -> bool:
    """Return True if every configured database answers; log what was found. Never raises."""
    ok = True
    for conn in connections.all():
        try:
            backends.open_marked(conn.ensure_connection)
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            idle_timeout = ops_for(conn.vendor).idle_session_timeout(conn)
        except Exception as exc:
            ok = False
            problem = backends.misconfiguration(exc)
            if problem is not None:
                dbwait.outage(conn.alias).misconfigured(exc, problem)
                continue
            log.warning(
                "database_unreachable",
                alias=conn.alias,
                error=str(exc),
                hint="requests that need it wait DB_UNAVAILABLE_WAIT, then get error -32001, "
                "until it is back",
            )
            if backends.is_connection_error(exc):
                dbwait.outage(conn.alias).began(exc)
            continue
        dbwait.outage(conn.alias).ended()
        log.info("database_reachable", alias=conn.alias, vendor=conn.vendor)
        if idle_timeout is not None:
            _warn_about_idle_timeout(conn, idle_timeout, config)
        _warn_about_migrations(conn)
    lifecycle.close_thread_connections()
    return ok


def _warn_about_migrations(conn: Any) -> None:
    """Log, as runserver prints, when the database lacks migrations the project has."""
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(conn)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        log.warning("migrations_unknown", alias=conn.alias, error=str(exc))
        return
    if plan:
        apps = sorted({migration.app_label for migration, _ in plan})
        log.warning(
            "unapplied_migrations",
            alias=conn.alias,
            count=len(plan),
            apps=apps,
            hint="handlers that use these apps' tables will fail; run manage.py migrate",
        )


def _connect_and_close(alias: str) -> None:
    """Open a connection to *alias* and close it again (a probe of an outage)."""
    conn = connections[alias]
    try:
        backends.open_marked(conn.ensure_connection)
    finally:
        conn.close()


def _watch_databases(config: Config, loop: Loop, stop: threading.Event) -> None:
    """Probe until the databases answer and mark the daemon ready; then, until *stop*,
    probe an alias found down, so the status says when it is back (its own thread)."""
    delay = 0.5
    while not stop.is_set():
        if probe_databases(config):
            loop.handback.put(loop.health.mark_ready)
            break
        # The daemon is up and serves (calls wait for the database, then get
        # -32001): systemd hears READY=1 now, with STATUS= saying what is down.
        loop.handback.put(loop.health.mark_serving)
        stop.wait(delay)
        delay = min(delay * 2, 10.0)
    try:
        dbwait.watch(stop, _connect_and_close)
    finally:
        lifecycle.close_thread_connections()


class Control:
    """What signals do to a running loop."""

    def __init__(self, loop: Loop, reread: Callable[[], Config] | None) -> None:
        self.loop = loop
        self._reread = reread

    def on_signal(self, signum: int) -> None:
        """SIGTERM/SIGINT: drain, then stop at once on a second one; SIGHUP: reload."""
        name = signal.Signals(signum).name
        if signum == WAKE_SIGNAL:
            if self.loop.tasks is not None:  # from the master: a sibling has a task ready
                self.loop.tasks.wake(None, forward=False)
            return
        if signum == signal.SIGHUP:
            self.reload()
        elif self.loop.state.value != "serving":
            log.warning("second_signal_stopping_now", signal=name)
            self.loop.stop_now()
        else:
            log.info("signal", signal=name)
            self.loop.begin_drain()

    def reload(self) -> None:
        """Re-read SOCKETSVC and reopen log files; settings that need a restart stay as they are."""
        loop = self.loop
        loop.health.reloading()
        reopen_log_files()
        if self._reread is None:
            loop.health.reloaded(loop)
            return
        try:
            fresh = self._reread()
        except Exception as exc:
            log.error("reload_failed", error=str(exc), hint="the previous settings stay in force")
            loop.health.reloaded(loop, applied=False)
            return
        config, changed, deferred = reloaded(loop.config, fresh)
        loop.apply(config)
        if deferred:
            log.warning("reload_needs_restart", settings=deferred)
        log.info("reloaded", changed=changed)
        loop.health.reloaded(loop)


def _acquire_listener(config: Config) -> Listener:
    try:
        return Listener.acquire(
            config.SOCKET,
            config.SOCKET_MODE,
            config.SOCKET_GROUP,
            config.BACKLOG,
            config.ACTIVATION_NAME,
        )
    except ListenerError as exc:
        raise StartupError(str(exc)) from None


def run(
    config: Config,
    options: Options | None = None,
    reload_config: Callable[[], Config] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit status."""
    options = options or Options()
    raise_open_files(config)
    dbwait.configure(config.DB_UNAVAILABLE_WAIT)
    if options.worker is not None:
        return _run_worker(options.worker, config, reload_config)
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
    try:
        # Nothing may be shared with worker threads or across a fork.
        lifecycle.close_thread_connections()
        if detach:
            stream = options.log_stream
            daemonize([*listener.preserved_fds(), *([stream] if stream else [])], stream)
        if pidfile is not None:
            pidfile.write()
        if supervised(config):
            from .supervisor import Supervisor

            master = Supervisor(
                listener, config, options.overrides, options.worker_args, reload_config
            )
            return master.run()
        return _serve(listener, config, registry, reload_config, detach)
    finally:
        listener.close()
        if pidfile is not None:
            pidfile.remove()


def _run_worker(
    worker: WorkerInfo, config: Config, reload_config: Callable[[], Config] | None
) -> int:
    """Serve as one worker process of a master, on the socket it passed."""
    die_with_master(worker.master_pid)
    set_process_slot(worker.slot)
    if worker.slot != 0:
        # One process decides the periodic schedules (any could: each slot is
        # enqueued once whoever decides it), so the others need not query.
        config = dataclasses.replace(config, SCHEDULES=())
    listener = Listener.inherited(worker.fd)
    role = WorkerRole(worker, config)
    try:
        return _serve(listener, config, autodiscover(), reload_config, False, role)
    finally:
        role.forget()
        listener.close()


def _serve(  # noqa: PLR0917
    listener: Listener,
    config: Config,
    registry: Any,
    reload_config: Callable[[], Config] | None,
    detached: bool,
    role: WorkerRole | None = None,
) -> int:
    from .tasks.serving import runner_for

    tasks = runner_for(config)
    dispatcher = Dispatcher(registry, config.DB_CHECK_AFTER_IDLE)
    loop = Loop(listener, config, dispatcher, Health(role=role), tasks)
    control = Control(loop, reload_config)
    watched = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
    if role is not None:
        watched.append(WAKE_SIGNAL)
        if tasks is not None:
            tasks.forward = role.forward_wake
            # One process per daemon watches the database for its siblings: the first slot.
            tasks.wakes.watch_for_siblings(role.info.slot == 0)
    signals = SignalWatch(watched, control.on_signal)
    loop.watch(signals, signals.deliver)
    log.info(
        "listening",
        socket=listener.describe(config.SOCKET),
        mode=None if listener.activated else f"{config.SOCKET_MODE:#o}",
        workers=config.WORKERS,
        handlers=len(registry),
        pid=os.getpid(),
        daemonized=detached,
    )
    stop_probe = threading.Event()
    threading.Thread(
        target=_watch_databases,
        args=(config, loop, stop_probe),
        name="socketsvc-databases",
        daemon=True,
    ).start()
    if tasks is not None:
        tasks.start()
    try:
        clean = loop.run()
    finally:
        stop_probe.set()
        signals.close()
        if tasks is not None:
            tasks.stop(timeout=1.0)
        loop.close()
    log.info("stopped", clean=clean)
    return 0 if clean else 1
