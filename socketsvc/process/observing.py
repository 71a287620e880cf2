"""Observation switched on in the daemon's processes, and ``/metrics`` served from it.

(The parts of :mod:`socketsvc.observe` that touch the database and the
network, put together here, where the processes are.)

:func:`start_service` runs once, in the service's first process (the master,
or the only process): it prepares the directory every process writes its
figures to and, with ``METRICS_LISTEN``, serves ``/metrics`` over HTTP on a
TCP address or a Unix socket from a thread of its own. :func:`start_process`
runs in every process that serves the socket: its metrics, and the thread
that writes its per-minute activity for the admin's dashboard.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from socketsvc.conf import Config
from socketsvc.db import vendors
from socketsvc.db.lifecycle import close_thread_connections, request_scope
from socketsvc.models import ActivityRecord
from socketsvc.observe import depth, events, prom
from socketsvc.observe.activity import FLUSH_EVERY, KEEP, MAXED, PRUNE_EVERY, Activity
from socketsvc.observe.depth import Depths

log = structlog.get_logger(__name__)


def metrics_wanted(config: Config) -> bool:
    """Return True if this daemon keeps metrics (``METRICS``; None: if the library is there)."""
    if config.METRICS is False:
        return False
    if prom.available():
        return True
    if config.METRICS is True or config.METRICS_LISTEN:
        raise ImproperlyConfigured(
            "SOCKETSVC['METRICS'] or ['METRICS_LISTEN'] is set but prometheus_client is not "
            "installed: pip install 'socketsvc[metrics]'"
        )
    return False


@dataclass
class ServiceObservation:
    """What the first process started: the figures' directory and the HTTP listener."""

    directory: str | None = None
    configured: str | None = None
    server: socketserver.BaseServer | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def close(self) -> None:
        """Stop serving ``/metrics`` and remove the figures (the service stops)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            if isinstance(self.server, _UnixServer):
                _unlink(self.server.server_address)
        events.disable()
        if self.directory is not None:
            prom.remove_directory(self.directory, self.configured)


def start_service(config: Config, database: str | None, supervising: bool) -> ServiceObservation:
    """Prepare metrics for the whole service (first process only), and ``METRICS_LISTEN``."""
    observation = ServiceObservation()
    if not metrics_wanted(config):
        return observation
    observation.configured = config.METRICS_DIR
    observation.directory = prom.prepare_directory(config.METRICS_DIR)
    if supervising:
        # The master counts restarts and recycles; its workers count the rest.
        events.enable(prom.install(_aliases()), None, frozenset())
    if database is not None:
        depth.use(Depths(database))
    if config.METRICS_LISTEN:
        observation.server = _listen(config.METRICS_LISTEN)
        thread = threading.Thread(
            target=observation.server.serve_forever, name="socketsvc-metrics", daemon=True
        )
        thread.start()
        observation.threads.append(thread)
        log.info("metrics_listening", address=config.METRICS_LISTEN)
    return observation


@dataclass
class ProcessObservation:
    """What one serving process started: its activity writer."""

    activity: Activity | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def close(self) -> None:
        """Write the last figures and stop counting."""
        events.disable()
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5.0)


def start_process(
    config: Config, methods: frozenset[str], database: str | None
) -> ProcessObservation:
    """Start counting in this serving process (metrics if the service keeps them, activity)."""
    observation = ProcessObservation()
    metrics = None
    if os.environ.get(prom.DIRECTORY_VARIABLE) and metrics_wanted(config):
        metrics = prom.install(_aliases())
    if database is not None:
        depth.use(Depths(database))
    if config.ACTIVITY:
        observation.activity = Activity(database or DEFAULT_DB_ALIAS, depth.here())
        observation.thread = threading.Thread(
            target=_write_activity,
            args=(observation.activity, observation.stop),
            name="socketsvc-activity",
            daemon=True,
        )
        observation.thread.start()
    events.enable(metrics, observation.activity, methods)
    return observation


def _aliases() -> tuple[str, ...]:
    return tuple(settings.DATABASES)


def _write_activity(activity: Activity, stop: threading.Event) -> None:
    """Write *activity* every ``FLUSH_EVERY`` seconds until *stop*, then once more; delete
    what is older than ``KEEP`` every ``PRUNE_EVERY`` seconds."""
    pruned_at = -PRUNE_EVERY
    said: list[str] = []  # the failure already logged, until a write succeeds
    try:
        while not stop.wait(FLUSH_EVERY):
            prune = time.monotonic() - pruned_at >= PRUNE_EVERY
            if _flush(activity, prune, said) and prune:
                pruned_at = time.monotonic()
        _flush(activity, False, said)
    finally:
        close_thread_connections()


def _flush(activity: Activity, prune: bool, said: list[str]) -> bool:
    """Write what *activity* counted (and prune); False if the database refused.

    The counts wait in memory for the next turn. A database that is down says so
    itself (its outage is logged); another failure (the table not migrated) is
    logged once, until a write succeeds again.
    """
    try:
        with request_scope():
            activity.flush(lambda rows: _upsert(activity.database, rows))
            if prune:
                ActivityRecord.objects.using(activity.database).filter(
                    minute__lt=datetime.now(UTC) - KEEP
                ).delete()
    except Exception as exc:
        kind = type(exc).__name__
        if not vendors.is_connection_error(exc) and kind not in said:
            said.append(kind)
            log.exception(
                "activity_not_written",
                hint="the dashboard's figures wait in memory; is socketsvc migrated "
                "(manage.py migrate socketsvc)?",
            )
        return False
    said.clear()
    return True


def _upsert(database: str, rows: list[list[Any]]) -> None:
    """Add *rows* to the activity table: all of them or none (they are kept to try again)."""
    connection = connections[database]
    adapt = connection.ops.adapt_datetimefield_value
    with transaction.atomic(using=database):
        vendors.ops_for(connection.vendor).add_to_rows(
            connection,
            ActivityRecord._meta.db_table,
            ["minute", "series", "label", "bucket"],
            [[adapt(row[0]), *row[1:]] for row in rows],
            ("series", MAXED),
        )


# -- /metrics over HTTP ---------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "socketsvc"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "Not Found: the metrics are at /metrics")
            return
        try:
            with request_scope():
                body, content_type = prom.exposition()
        except Exception:
            log.exception("metrics_not_collected")
            self.send_error(500, "Internal Server Error: see the service log")
            return
        finally:
            close_thread_connections()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        address = self.client_address
        return str(address[0]) if isinstance(address, tuple) and address else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a line


class _TCPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TCP6Server(_TCPServer):
    address_family = socket.AF_INET6


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _unlink(path: Any) -> None:
    with contextlib.suppress(OSError, TypeError):
        os.unlink(path)


def parse_listen(value: str) -> tuple[str, str | tuple[str, int]]:
    """Return ("unix", path) or ("tcp", (host, port)) for a ``METRICS_LISTEN`` value."""
    if value.startswith("/"):
        return "unix", value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(
            f"SOCKETSVC['METRICS_LISTEN'] {value!r} must be host:port (127.0.0.1:9464, "
            "[::1]:9464) or the absolute path of a Unix socket"
        )
    return "tcp", (host.strip("[]") or "127.0.0.1", int(port))


def _listen(value: str) -> socketserver.BaseServer:
    kind, address = parse_listen(value)
    if kind == "unix":
        assert isinstance(address, str)
        _unlink(address)  # a socket left by a daemon that died
        server: socketserver.BaseServer = _UnixServer(address, _Handler)
        os.chmod(address, 0o660)
        return server
    assert isinstance(address, tuple)
    try:
        if ":" in address[0]:
            return _TCP6Server(address, _Handler)
        return _TCPServer(address, _Handler)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"SOCKETSVC['METRICS_LISTEN'] {value!r}: cannot listen there ({exc.strerror})"
        ) from None
