"""Fixtures: throwaway MariaDB servers, migrated databases, and daemon subprocesses."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from socketsvc.client import close_connections
from tests.harness import mariadb as mariadb_server
from tests.harness import postgres as postgres_server
from tests.harness.daemon import Daemon, manage
from tests.harness.gate import Gate
from tests.harness.mariadb import MariaDB
from tests.harness.notify import NotifySocket
from tests.harness.postgres import PostgreSQL
from tests.harness.scripted import Reply, ScriptedService, result
from tests.harness.taskclient import TaskClient

# The servers every database fault test runs on (their ids in test names).
VENDORS = ("mariadb", "postgresql")
Server = MariaDB | PostgreSQL


_MARIADB_FIXTURES = {"mariadb_template", "shared_mariadb", "mariadb", "private_mariadb"}
_POSTGRESQL_FIXTURES = {
    "postgres_template",
    "shared_postgresql",
    "postgresql",
    "private_postgresql",
}
_UNIT = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by what they need, so ``-m "not daemon"`` is the fast loop.

    ``daemon``: every test outside tests/unit (real daemons, databases, browsers);
    ``mariadb``/``postgresql``: by the server fixtures a test uses, or the vendor it is
    parametrized with (modules that start servers themselves mark themselves);
    ``browser`` is set by the modules that drive Chromium.
    """
    for item in items:
        path = Path(str(item.path)).resolve()
        if _UNIT not in path.parents:
            item.add_marker(pytest.mark.daemon)
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        vendors = {value for value in params if isinstance(value, str)}
        if names & _MARIADB_FIXTURES or "mariadb" in vendors:
            item.add_marker(pytest.mark.mariadb)
        if names & _POSTGRESQL_FIXTURES or "postgresql" in vendors:
            item.add_marker(pytest.mark.postgresql)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (Unix socket paths hold 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ss", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock_path(short_tmp: Path) -> str:
    return str(short_tmp / "s.sock")


@pytest.fixture
def gate(short_tmp: Path) -> Iterator[Gate]:
    """A gate that ``testapp.hold`` handlers wait at until the test opens it."""
    with Gate(short_tmp / "gate.sock") as held:
        yield held


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by every xdist worker of this run."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _once(shared: Path, name: str, build: Callable[[Path], None]) -> Path:
    """Build *name* under *shared* exactly once across workers; return its path."""
    target = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "ready").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            build(target)
            (target / "ready").touch()
    return target


def _build_mariadb_template(target: Path) -> None:
    server = MariaDB(target)
    server.install()
    server.start()
    try:
        mariadb_server.migrate(server)
    finally:
        server.stop()


def _postgres_template_base(shared: Path) -> Path:
    """Where this run's PostgreSQL template lives: outside pytest's directories, which only
    root may enter (the server runs as the postgres user)."""
    digest = hashlib.sha1(str(shared).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"socketsvc-pg-{digest}"


def _build_postgres_template(target: Path) -> None:
    server = PostgreSQL(_postgres_template_base(target.parent))
    shutil.rmtree(server.base, ignore_errors=True)
    server.install()
    server.start()
    try:
        postgres_server.migrate(server)
    finally:
        server.stop()


def _build_sqlite_template(target: Path) -> None:
    done = manage("migrate", "-v0", env={"DATABASE_URL": f"sqlite:///{target / 'db.sqlite3'}"})
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def mariadb_template(tmp_path_factory: pytest.TempPathFactory) -> MariaDB:
    """A stopped, migrated MariaDB datadir that servers are copied from."""
    return MariaDB(
        _once(_shared_dir(tmp_path_factory), "mariadb-template", _build_mariadb_template)
    )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file that daemons get copies of."""
    return _once(_shared_dir(tmp_path_factory), "sqlite-template", _build_sqlite_template) / (
        "db.sqlite3"
    )


@pytest.fixture(scope="session")
def postgres_template(tmp_path_factory: pytest.TempPathFactory) -> PostgreSQL:
    """A stopped, migrated PostgreSQL data directory that servers are copied from."""
    shared = _shared_dir(tmp_path_factory)
    _once(shared, "postgres-template", _build_postgres_template)
    return PostgreSQL(_postgres_template_base(shared))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the PostgreSQL template once the whole run is over (not per xdist worker)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not hasattr(config, "_tmp_path_factory"):
        return
    base = config._tmp_path_factory.getbasetemp()
    shutil.rmtree(_postgres_template_base(base), ignore_errors=True)


def _start_copy(template: Server) -> Server:
    server = type(template)(Path(tempfile.mkdtemp(prefix="db", dir="/tmp")))
    server.copy_from(template)  # type: ignore[arg-type]
    server.start()
    return server


def _running_copy(template: Server) -> Iterator[Server]:
    """A started copy of *template*, stopped and removed afterwards."""
    server = _start_copy(template)
    yield server
    server.stop()
    shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_mariadb(mariadb_template: MariaDB) -> Iterator[Server]:
    """One throwaway MariaDB per worker, for tests that only reconfigure sessions."""
    yield from _running_copy(mariadb_template)


@pytest.fixture(scope="session")
def shared_postgresql(postgres_template: PostgreSQL) -> Iterator[Server]:
    """One throwaway PostgreSQL per worker, for tests that only reconfigure sessions."""
    yield from _running_copy(postgres_template)


@pytest.fixture
def mariadb(shared_mariadb: MariaDB) -> Iterator[MariaDB]:
    """The worker's throwaway MariaDB, with wait_timeout restored after the test."""
    yield shared_mariadb
    shared_mariadb.reset()


@pytest.fixture
def postgresql(shared_postgresql: PostgreSQL) -> Iterator[PostgreSQL]:
    """The worker's throwaway PostgreSQL, with its idle timeouts restored after the test."""
    yield shared_postgresql
    shared_postgresql.reset()


@pytest.fixture
def private_postgresql(postgres_template: PostgreSQL) -> Iterator[Server]:
    """A throwaway PostgreSQL of the test's own, for tests that stop or restart it."""
    yield from _running_copy(postgres_template)


@pytest.fixture(params=VENDORS)
def database(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The worker's throwaway server of each vendor in turn, reset after the test."""
    server: Server = request.getfixturevalue(f"shared_{request.param}")
    yield server
    server.reset()


@pytest.fixture
def private_mariadb(mariadb_template: MariaDB) -> Iterator[Server]:
    """A throwaway MariaDB of the test's own, for tests that stop or restart it."""
    yield from _running_copy(mariadb_template)


@pytest.fixture(params=VENDORS)
def private_database(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A throwaway server of the test's own, of each vendor in turn (to stop or restart)."""
    template: Server = request.getfixturevalue(
        "mariadb_template" if request.param == "mariadb" else "postgres_template"
    )
    yield from _running_copy(template)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons started by a test; any still running at teardown are killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()
    close_connections()


@pytest.fixture
def launch(daemons: list[Daemon]) -> Callable[..., Daemon]:
    """Build a daemon, not yet started, that is killed at teardown if still running.

    ``launch(socket_path, env, *args, kind=Daemon, **options)`` takes :class:`Daemon`'s
    arguments (*kind* a subclass of it): the one way a test gets a daemon, whoever starts it
    and however (``start()``, ``start(wait=False)``, ``run_to_exit()``).
    """

    def build(*args: Any, kind: type[Daemon] = Daemon, **options: Any) -> Daemon:
        daemon = kind(*args, **options)
        daemons.append(daemon)
        return daemon

    return build


@pytest.fixture
def start_daemon(launch: Callable[..., Daemon], short_tmp: Path) -> Callable[..., Daemon]:
    """Start a daemon on *database_url* and wait until it is ready (its database probed).

    ``start_daemon(url, *args, conn_max_age="0", health_checks=False, ready=True,
    socket_path=None, env=None, **settings)``: *args* are command-line options, *settings*
    SOCKETSVC values (the one way to give them: a file the daemon reads, again on
    SIGHUP), *env* anything else the process needs; ``ready=False`` waits only for a ping
    (for a database that is down). The daemon is killed at teardown.
    """
    numbers = itertools.count()

    def start(
        database_url: str,
        *args: str,
        conn_max_age: str = "0",
        health_checks: bool = False,
        ready: bool = True,
        socket_path: str | None = None,
        env: dict[str, str] | None = None,
        **settings: object,
    ) -> Daemon:
        daemon = launch(
            socket_path or str(short_tmp / f"d{next(numbers)}.sock"),
            {
                "DATABASE_URL": database_url,
                "TEST_CONN_MAX_AGE": conn_max_age,
                "TEST_CONN_HEALTH_CHECKS": "1" if health_checks else "0",
                **(env or {}),
            },
            *args,
            settings=settings,
        )
        return daemon.start(ready=ready)

    return start


@pytest.fixture
def sqlite_url(sqlite_template: Path, short_tmp: Path) -> str:
    """A DATABASE_URL for a fresh copy of the migrated SQLite database."""
    copy = short_tmp / "db.sqlite3"
    shutil.copy(sqlite_template, copy)
    return f"sqlite:///{copy}"


@pytest.fixture
def sqlite_daemon(start_daemon: Callable[..., Daemon], sqlite_url: str) -> Daemon:
    """A daemon on SQLite, for protocol tests that need no MariaDB."""
    return start_daemon(sqlite_url)


@pytest.fixture
def clean_tasks(request: pytest.FixtureRequest) -> Server:
    """The worker's throwaway MariaDB with no tasks, workers, schedules or markers left by earlier
    tests.

    ``@pytest.mark.parametrize("clean_tasks", VENDORS, indirect=True)`` runs a test on
    PostgreSQL too.
    """
    vendor = getattr(request, "param", "mariadb")
    server: Server = request.getfixturevalue("mariadb" if vendor == "mariadb" else "postgresql")
    for table in TASK_TABLES:
        server.query(f"DELETE FROM {table}", db="socketsvc_test")
    return server


TASK_TABLES = (
    "socketsvc_workflow",
    "socketsvc_task",
    "socketsvc_worker",
    "socketsvc_schedule",
    "socketsvc_limit",
    "socketsvc_activity",
    "testapp_marker",
)


@pytest.fixture
def taskclient() -> Iterator[Callable[..., TaskClient]]:
    """Start processes that enqueue and read tasks: ``taskclient(database_url, socket_path)``."""
    started: list[TaskClient] = []

    def start(database_url: str, socket_path: str, **env: str) -> TaskClient:
        started.append(TaskClient(database_url, socket_path, **env))
        return started[-1]

    yield start
    for client in started:
        client.close()


@pytest.fixture
def notify_socket(short_tmp: Path, daemons: list[Daemon]) -> Iterator[NotifySocket]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; at the end, every message
    it received came from a daemon's main process (NotifyAccess=main), never a worker's."""
    listener = NotifySocket(str(short_tmp / "notify"))
    yield listener
    listener.close()
    mains = {daemon.pid for daemon in daemons if daemon.process is not None}
    assert listener.senders <= mains, f"NOTIFY_SOCKET heard {listener.senders}, not {mains}"


@pytest.fixture
def service(sock_path, settings) -> Iterator[Callable[..., ScriptedService]]:
    """Start a scripted service on the socket the admin calls: ``service(reply, timeout=5)``."""
    started: list[ScriptedService] = []

    def start(reply: Reply | None = None, timeout: float = 5.0) -> ScriptedService:
        reply = reply or result(None)
        settings.SOCKETSVC = {"SOCKET": sock_path, "CALL_TIMEOUT": timeout}
        started.append(ScriptedService(sock_path, reply))
        return started[-1]

    settings.SOCKETSVC = {"SOCKET": sock_path, "CALL_TIMEOUT": 5.0}
    yield start
    for stub in started:
        stub.stop()
