"""pytest fixtures for socketsvc (registered by the package as the ``socketsvc`` plugin).

``socketsvc_in_process``: ``call()`` runs the handlers in the test's thread (with
pytest-django's ``db``, the handlers see the test's data); ``.run_tasks()`` runs
the queued tasks. ``socketsvc_live``: a real ``runsocketservice`` for the test
session, serving the test database, with ``transactional_db`` for each test
(the service is another process: it sees committed data).

Nothing of socketsvc or Django is imported before a fixture is used: the
plugin loads before Django is configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from socketsvc.testing.inprocess import InProcess
    from socketsvc.testing.live import LiveService


@pytest.fixture
def socketsvc_in_process() -> Iterator[InProcess]:
    """``call()``/``notify()`` run in this thread through the daemon's request path."""
    from socketsvc.testing.inprocess import in_process

    with in_process() as service:
        yield service


@pytest.fixture(scope="session")
def socketsvc_live_service(
    request: pytest.FixtureRequest, django_db_setup: Any, django_db_blocker: Any
) -> Iterator[LiveService]:
    """One live ``runsocketservice`` for the session, on the test databases."""
    from socketsvc.testing.live import LiveService

    args = request.config.getini("socketsvc_args")
    with django_db_blocker.unblock():
        service = LiveService(*args).start()
    yield service
    service.stop()


@pytest.fixture
def socketsvc_live(
    socketsvc_live_service: LiveService, transactional_db: Any, settings: Any
) -> LiveService:
    """The session's live service, with ``call()`` pointed at it and a transactional test."""
    current = getattr(settings, "SOCKETSVC", None) or {}
    settings.SOCKETSVC = {**current, "SOCKET": socketsvc_live_service.socket}
    return socketsvc_live_service


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "socketsvc_args",
        type="args",
        default=[],
        help="arguments of the live runsocketservice (e.g. --workers 2)",
    )
