"""Starting the servers of a run and the targets measured against them.

Each server is a process (or tree) of the :class:`~bench.stack.Stack`; each
:class:`~bench.model.Target` names the server it runs on and how to call it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.clients import probe_client
from bench.measure import in_clients
from bench.model import Endpoint, Target
from bench.stack import BIN, Stack


def manage(*args: str) -> list[str]:
    """Return the command line of a ``manage.py`` command under this interpreter."""
    return [sys.executable, "manage.py", *args]


def start_servers(stack: Stack, full: bool) -> list[Target]:
    """Start every server of the plan and return the targets, floor first."""
    sock = stack.socket_path
    bare = str(Path(__file__).resolve().parent / "bare_server.py")
    servers: list[tuple[str, list[str], dict[str, str]]] = [
        ("bare", [sys.executable, bare, "--socket", sock("bare")], stack.env()),
        ("bare-orm", [sys.executable, bare, "--orm", "--socket", sock("bare-orm")], stack.env()),
        (
            "bare-orm-60",
            [sys.executable, bare, "--orm", "--socket", sock("bare-orm-60")],
            stack.env(conn_max_age=60),
        ),
        (
            "socketsvc",
            manage("runsocketservice", "--socket", sock("socketsvc")),
            stack.env(conn_max_age=60, health_checks=True),
        ),
        (
            "socketsvc-2p",
            manage("runsocketservice", "--processes", "2", "--socket", sock("socketsvc-2p")),
            stack.env(conn_max_age=60, health_checks=True),
        ),
        (
            "socketsvc-0",
            manage("runsocketservice", "--socket", sock("socketsvc-0")),
            stack.env(conn_max_age=0),
        ),
        (
            "socketsvc-pingall",
            manage("runsocketservice", "--socket", sock("socketsvc-pingall")),
            stack.env(conn_max_age=60, check_after_idle=0.0),
        ),
    ]
    # The demo's settings for every Django server the comparison runs.
    demo = stack.env(conn_max_age=60, health_checks=True)
    if full:
        stack.flush_redis()
        servers += [
            (
                "gunicorn",
                [
                    str(BIN / "gunicorn"),
                    "--bind",
                    f"unix:{sock('gunicorn')}",
                    "--workers",
                    "1",
                    "--worker-class",
                    "sync",
                    "--log-level",
                    "warning",
                    "bench.wsgi:application",
                ],
                demo,
            ),
            (
                "celery",
                [
                    str(BIN / "celery"),
                    "-A",
                    "bench.celery_app",
                    "worker",
                    "-P",
                    "solo",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "WARNING",
                ],
                demo,
            ),
            (
                "huey",
                [
                    str(BIN / "huey_consumer"),
                    "bench.huey_app.huey",
                    "--workers",
                    "1",
                    "--worker-type",
                    "thread",
                    "--quiet",
                ],
                demo,
            ),
        ]
    for name, argv, env in servers:
        stack.spawn(name, argv, env)
    targets = [
        Target(
            "floor",
            "bare selectors server, no DB (floor)",
            Endpoint("rpc", sock("bare"), "rpc.ping"),
            "bare",
        ),
        Target(
            "bare-orm",
            "bare server + ORM, CONN_MAX_AGE=0",
            Endpoint("rpc", sock("bare-orm")),
            "bare-orm",
            "connects per request",
        ),
        Target(
            "socketsvc",
            "socketsvc, demo defaults (CONN_MAX_AGE=60, CONN_HEALTH_CHECKS)",
            Endpoint("rpc", sock("socketsvc")),
            "socketsvc",
            "checks reused connections: socket poll, ping after 1 s idle",
        ),
        Target(
            "socketsvc-2p",
            "socketsvc --processes 2, demo defaults",
            Endpoint("rpc", sock("socketsvc-2p")),
            "socketsvc-2p",
            "a master and 2 worker processes on one socket",
        ),
        Target(
            "socketsvc-ping",
            "socketsvc rpc.ping",
            Endpoint("rpc", sock("socketsvc"), "rpc.ping"),
            "socketsvc",
        ),
        Target(
            "bare-orm-60",
            "bare server + ORM, CONN_MAX_AGE=60",
            Endpoint("rpc", sock("bare-orm-60")),
            "bare-orm-60",
            "no ping: fails once per dead connection",
        ),
        Target(
            "socketsvc-0",
            "socketsvc, CONN_MAX_AGE=0",
            Endpoint("rpc", sock("socketsvc-0")),
            "socketsvc-0",
            "connects per request",
        ),
        Target(
            "socketsvc-pingall",
            "socketsvc, CONN_MAX_AGE=60, DB_CHECK_AFTER_IDLE=0",
            Endpoint("rpc", sock("socketsvc-pingall")),
            "socketsvc-pingall",
            "pings every reused connection",
        ),
    ]
    if full:
        targets += [
            Target(
                "gunicorn",
                "gunicorn sync worker + Django view",
                Endpoint("http", sock("gunicorn")),
                "gunicorn",
                "demo DB settings, no middleware",
            ),
            Target(
                "celery",
                "Celery solo pool, Redis broker+backend",
                Endpoint("celery"),
                "celery",
                "demo DB settings (Celery closes them per task)",
            ),
            Target(
                "huey",
                "huey, Redis, result via BLPOP",
                Endpoint("huey"),
                "huey",
                "demo DB settings",
            ),
        ]
    return targets


def wait_ready(stack: Stack, targets: list[Target], pk: int) -> None:
    """Wait until every target answers one request (each probe in a client process)."""
    for target in targets:
        [error] = in_clients(probe_client, [(target.endpoint, pk, 60.0)], 90.0)
        if error is not None:
            raise RuntimeError(
                f"{target.name} never answered: {error}\n{stack.log_tail(target.server)}"
            )
