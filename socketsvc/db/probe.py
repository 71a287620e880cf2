"""The databases at start: does each answer, is its idle timeout safe, are migrations applied.

The daemon serves before its databases answer (calls wait for them, then get
-32001); :func:`watch_databases` tells it when they do, and keeps trying an
alias found down so the status says when it is back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog
from django.db import connections

from socketsvc.conf import Config
from socketsvc.db import lifecycle, outages, vendors
from socketsvc.db.vendors import ops_for

log = structlog.get_logger(__name__)


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
            vendors.open_marked(conn.ensure_connection)
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            idle_timeout = ops_for(conn.vendor).idle_session_timeout(conn)
        except Exception as exc:
            ok = False
            problem = vendors.misconfiguration(exc)
            if problem is not None:
                outages.outage(conn.alias).misconfigured(exc, problem)
                continue
            log.warning(
                "database_unreachable",
                alias=conn.alias,
                error=str(exc),
                hint="requests that need it wait DB_UNAVAILABLE_WAIT, then get error -32001, "
                "until it is back",
            )
            if vendors.is_connection_error(exc):
                outages.outage(conn.alias).began(exc)
            continue
        outages.outage(conn.alias).ended()
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
        vendors.open_marked(conn.ensure_connection)
    finally:
        conn.close()


def watch_databases(
    config: Config,
    ready: Callable[[], None],
    serving: Callable[[], None],
    stop: threading.Event,
) -> None:
    """Probe until the databases answer, then call *ready*; until then call *serving*
    after each failed probe. Then, until *stop*, probe an alias found down, so the
    status says when it is back (the daemon runs this in a thread of its own)."""
    delay = 0.5
    while not stop.is_set():
        if probe_databases(config):
            ready()
            break
        # The daemon is up and serves (calls wait for the database, then get
        # -32001): systemd hears READY=1 now, with STATUS= saying what is down.
        serving()
        stop.wait(delay)
        delay = min(delay * 2, 10.0)
    try:
        outages.watch(stop, _connect_and_close)
    finally:
        lifecycle.close_thread_connections()
