"""``manage.py runsocketservice``: run the socketsvc daemon (foreground unless --daemonize)."""

from __future__ import annotations

import json
import os
from typing import Any

import structlog
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from socketsvc.conf import get_config, reread_config
from socketsvc.logsetup import configure_logging
from socketsvc.methods.registry import autodiscover
from socketsvc.process.reloader import RELOAD_EXIT, CodeWatch, is_child, run_parent
from socketsvc.process.run import Options, StartupError, run
from socketsvc.process.worker import from_environment

log = structlog.get_logger(__name__)


def run_system_checks() -> None:
    """Run Django's checks without database access; log warnings, refuse to start on errors.

    The daemon must start (and answer "database unavailable") while the
    database is down, so database-backed checks are left to ``manage.py check``.
    """
    issues = [issue for issue in checks.run_checks(databases=[]) if not issue.is_silenced()]
    for issue in issues:
        if not issue.is_serious():
            log.warning("system_check", id=issue.id, msg=issue.msg, hint=issue.hint)
    serious = [issue for issue in issues if issue.is_serious()]
    if serious:
        raise CommandError(
            "system checks failed: " + "; ".join(f"{issue.id}: {issue.msg}" for issue in serious)
        )


def use_test_databases() -> None:
    """Serve the databases ``socketsvc.testing.LiveService`` names (its test databases)."""
    names = os.environ.get("SOCKETSVC_DATABASE_NAMES")
    if not names:
        return
    for alias, name in json.loads(names).items():
        connections.settings[alias]["NAME"] = name


def _mode(value: str) -> int:
    return int(value, 8)


def _processes(value: str) -> int | str:
    return value if value == "auto" else int(value)


class Command(BaseCommand):
    help = "Serve socketsvc handlers over JSON-RPC on a Unix socket until SIGTERM."
    # Checks run in handle(), logged in the daemon's format (see run_system_checks).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--socket", help="socket path (default: SOCKETSVC['SOCKET'])")
        parser.add_argument("--workers", type=int, help="handler threads (per process)")
        parser.add_argument(
            "--task-workers", type=int, help="task threads (per process; 0: run no tasks)"
        )
        parser.add_argument(
            "--processes",
            type=_processes,
            help="worker processes under a supervising master; 'auto': one per core",
        )
        parser.add_argument("--socket-mode", type=_mode, help="octal mode, e.g. 660")
        parser.add_argument("--socket-group", help="group that owns the socket")
        parser.add_argument("--max-message-bytes", type=int, help="longest request line")
        parser.add_argument("--drain-timeout", type=float, help="seconds to finish on SIGTERM")
        parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
        parser.add_argument("--log-file", help="append logs to this file (reopened on SIGHUP)")
        parser.add_argument(
            "--daemonize",
            action="store_true",
            help="detach into the background (hosts without systemd; ignored under systemd)",
        )
        parser.add_argument("--pidfile", help="write the daemon's pid here")
        parser.add_argument(
            "--reload",
            action="store_true",
            help="start again when the project's code changes (development, as runserver does)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        use_test_databases()
        worker = from_environment()
        overrides: dict[str, Any] = {
            "SOCKET": options["socket"],
            "WORKERS": options["workers"],
            "TASK_WORKERS": options["task_workers"],
            "SOCKET_MODE": options["socket_mode"],
            "SOCKET_GROUP": options["socket_group"],
            "MAX_MESSAGE_BYTES": options["max_message_bytes"],
            "DRAIN_TIMEOUT": options["drain_timeout"],
            "PROCESSES": options["processes"],
        }
        if worker is not None:
            # A worker process of a master: the master's command line, not this one.
            overrides = dict(worker.overrides)
        worker_args = ["--log-level", options["log_level"]]
        if options["log_file"]:
            worker_args += ["--log-file", options["log_file"]]
        if options["reload"] and worker is None and not is_child():
            if options["daemonize"]:
                raise CommandError("--reload is for development: it does not go with --daemonize")
            configure_logging(options["log_level"].upper(), options["log_file"])
            status = run_parent(autodiscover)
            if status:
                raise CommandError(f"the daemon exited with status {status}", returncode=status)
            return
        watch = CodeWatch() if options["reload"] and worker is None else None
        try:
            config = get_config(**overrides)
            handler = configure_logging(options["log_level"].upper(), options["log_file"])
            if worker is None:  # the master checked for its worker processes
                run_system_checks()
            if watch is not None:
                autodiscover()  # the handlers' files are watched from the start
                watch.start()
            status = run(
                config,
                Options(
                    daemonize=options["daemonize"],
                    pidfile=options["pidfile"],
                    log_stream=getattr(handler, "stream", None),
                    worker=worker,
                    overrides=overrides,
                    worker_args=worker_args,
                ),
                reload_config=lambda: reread_config(**overrides),
            )
        except (ImproperlyConfigured, StartupError, OSError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            if watch is not None:
                watch.stop()
        if watch is not None and watch.changed is not None:
            raise SystemExit(RELOAD_EXIT)  # the parent starts the new code
        if status:
            raise CommandError("stopped before every request was answered", returncode=status)
