"""Run the daemon: discover handlers, take the socket, (detach,) serve until drained, clean up.

One process serves the socket itself; with ``PROCESSES`` above 1 it becomes
the master of worker processes (``master``), each of which comes back here
(``_run_worker``) to serve the socket it inherited.
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
from django.core.exceptions import ImproperlyConfigured

from socketsvc.conf import Config, supervised
from socketsvc.db import lifecycle
from socketsvc.db.probe import watch_databases
from socketsvc.logsetup import set_process_slot
from socketsvc.methods.dispatch import Dispatcher
from socketsvc.methods.registry import autodiscover
from socketsvc.process.daemonize import PidFile, PidFileError, daemonize
from socketsvc.process.observing import ServiceObservation, start_process, start_service
from socketsvc.process.rlimits import raise_open_files
from socketsvc.process.worker import WorkerInfo, WorkerRole, die_with_master
from socketsvc.server.control import Control
from socketsvc.server.health import Health
from socketsvc.server.listener import Listener, ListenerError
from socketsvc.server.loop import Loop
from socketsvc.server.signals import WAKE_SIGNAL, SignalWatch
from socketsvc.systemd import under_systemd

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


@dataclass
class Options:
    """How to run, beyond the SOCKETSVC settings."""

    daemonize: bool = False
    pidfile: str | None = None
    log_stream: IO[Any] | None = None
    # Set in a worker process started by a master (socketsvc.process.master).
    worker: WorkerInfo | None = None
    # What a master passes on to the workers it starts.
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    worker_args: list[str] = dataclasses.field(default_factory=list)


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
        observation = _start_observing(config)
        try:
            if supervised(config):
                from socketsvc.process.master import Supervisor

                master = Supervisor(
                    listener, config, options.overrides, options.worker_args, reload_config
                )
                return master.run()
            return _serve(listener, config, registry, reload_config, detach)
        finally:
            observation.close()
    finally:
        listener.close()
        if pidfile is not None:
            pidfile.remove()


def _tasks_database(config: Config) -> str | None:
    """Return the database of the tasks this daemon serves, if any."""
    from socketsvc.tasks.daemon.serving import served

    what = served(config)
    return what.database if what is not None else None


def _start_observing(config: Config) -> ServiceObservation:
    try:
        return start_service(config, _tasks_database(config), supervised(config))
    except ImproperlyConfigured as exc:
        raise StartupError(str(exc)) from None


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
    from socketsvc.tasks.daemon.serving import runner_for

    tasks = runner_for(config)
    dispatcher = Dispatcher(registry, config.DB_CHECK_AFTER_IDLE)
    loop = Loop(listener, config, dispatcher, Health(role=role), tasks)
    control = Control(loop, reload_config)
    watched = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
    if role is not None:
        watched.append(WAKE_SIGNAL)
        if tasks is not None:
            tasks.forward = role.forward_wake
            # A run stuck past its hard limit is stopped by replacing this process.
            tasks.replaceable = True
            # One process per daemon watches the database for its siblings: the first slot.
            tasks.wakes.watch_for_siblings(role.info.slot == 0)
    signals = SignalWatch(watched, control.on_signal)
    loop.watch(signals, signals.deliver)
    methods = frozenset(method.name for method in (*loop.router.builtins, *registry))
    observing = start_process(config, methods, tasks.served.database if tasks else None)
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
        target=watch_databases,
        args=(
            config,
            lambda: loop.handback.put(loop.health.mark_ready),
            lambda: loop.handback.put(loop.health.mark_serving),
            stop_probe,
        ),
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
        observing.close()
    log.info("stopped", clean=clean)
    return 0 if clean else 1
