"""Admin buttons against a real daemon: every outcome the scripted service of test_admin.py
produces on the wire, produced here by a real ``runsocketservice`` (and its database).

Only "not JSON" has no real counterpart (the daemon never sends anything but JSON-RPC);
the rest are made as they happen in production: a handler that fails or refuses, wrong
params, a method that does not exist, a database that is down, a call that outlasts its
button's timeout, a worker process killed mid-call, every connection of the user busy,
a daemon stopping with the call still queued, and no daemon at all.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import RequestFactory

from project.shop.models import Product
from socketsvc.admin import Button, SocketServiceAdminMixin
from tests.harness.daemon import RawClient
from tests.harness.waiting import busy_workers_at_least, poll

pytestmark = pytest.mark.django_db


# The gate "Hold" waits at (set by the test that presses it).
HOLD_AT: list[str] = [""]


class OutcomesAdmin(SocketServiceAdminMixin, admin.ModelAdmin):
    socketsvc_buttons = [
        Button("testapp.add", "Add", name="add", params=lambda product: [1, 2]),
        Button(
            "testapp.fail",
            "Fail",
            name="fail",
            params=lambda product: ["quantity must be positive"],
        ),
        Button("shop.sell", "Sell", name="sell", params=lambda product: {"sku": "NOPE"}),
        Button("testapp.add", "Wrong", name="wrong", params=lambda product: {"c": 1}),
        Button("testapp.no_such_handler", "Missing", name="missing"),
        Button("testapp.count_notes", "Count", name="count", params=lambda product: {}),
        Button("testapp.sleep", "Slow", name="slow", params=lambda product: [5], timeout=0.5),
        Button("testapp.hold", "Hold", name="hold", params=lambda product: [HOLD_AT[0]]),
    ]


def press(user: User, product: Product, name: str) -> list[tuple[str, str]]:
    """Press *name* on *product*'s change form; return the messages the next page shows."""
    model_admin = OutcomesAdmin(Product, admin.AdminSite(name="live"))
    request = RequestFactory().post("/")
    request.user = user
    request.session = {}
    request._messages = FallbackStorage(request)
    response = model_admin.socketsvc_button_view(request, str(product.pk), name)
    assert response.status_code == 302
    return [(m.level_tag, m.message) for m in request._messages]


@pytest.fixture
def mug() -> Product:
    return Product.objects.get(sku="MUG-01")


@pytest.fixture
def live(private_mariadb, start_daemon, settings):
    """A real daemon (two worker processes) on a throwaway MariaDB; the admin calls it."""

    def start(*args: str, **options: Any):
        daemon = start_daemon(private_mariadb.url(), *args, DB_UNAVAILABLE_WAIT=0, **options)
        settings.SOCKETSVC = {"SOCKET": daemon.socket, "CALL_TIMEOUT": 20.0}
        return daemon

    return start


CALLED = {
    "add": ("success", "Add: 3"),
    "fail": ("error", "Fail: the job failed with RuntimeError: quantity must be positive"),
    "sell": ("error", "Sell: the request was refused: No product with SKU 'NOPE'"),
    "wrong": (
        "error",
        "Wrong: the service refused its params: Invalid params for testapp.add(a: int, "
        "b: int = 0) -> int: missing a required argument: 'a'; and it has no parameter 'c'",
    ),
    "missing": (
        "error",
        "Missing: the background service has no handler 'testapp.no_such_handler'; is its app "
        "installed, and has the service been restarted since it was added?",
    ),
    "slow": (
        "error",
        "Slow: no reply from the background service within 0.5 s. The job may still be "
        "running; check its effect before trying again.",
    ),
}


@pytest.mark.parametrize("name", sorted(CALLED))
def test_each_answer_of_a_real_daemon_is_its_message(admin_user, mug, live, name):
    """A success, a failure, a refusal, wrong params, no such method, a timeout: each is the
    message the scripted matrix expects, on a 302 to the change form."""
    live("--processes", "2")
    assert press(admin_user, mug, name) == [CALLED[name]]


def test_a_database_that_is_down_is_its_message(admin_user, mug, live, private_mariadb):
    """The daemon's database is down: "cannot reach its database right now"."""
    live()
    private_mariadb.stop()
    try:
        assert press(admin_user, mug, "count") == [
            (
                "error",
                "Count: the background service cannot reach its database right now; try again "
                "later.",
            )
        ]
    finally:
        private_mariadb.start()


def test_a_worker_process_killed_mid_call_is_its_message(admin_user, mug, live, gate):
    """The worker process running the call is killed: "lost before it replied"."""
    daemon = live("--processes", "2")
    HOLD_AT[0] = gate.path
    seen: list[list[tuple[str, str]]] = []
    presser = threading.Thread(target=lambda: seen.append(press(admin_user, mug, "hold")))
    presser.start()
    gate.wait_for(1)
    holder = poll(lambda: next((r["pid"] for r in busy(daemon)), None))
    daemon_process_kill(holder)
    presser.join(30)
    assert seen == [
        [
            (
                "error",
                "Hold: the connection to the background service was lost before it replied; the "
                "job may or may not have run. Check before trying again.",
            )
        ]
    ]


def busy(daemon) -> list[dict[str, Any]]:
    """Return the worker processes' rows that report a busy handler thread."""
    return [row for row in daemon.call("rpc.status")["processes"] if row["busy_workers"]]


def daemon_process_kill(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)


def test_every_connection_of_the_user_busy_is_its_message(admin_user, mug, live, gate):
    """MAX_CONNECTIONS_PER_UID=1, that one connection's call in flight: "busy"."""
    daemon = live(MAX_CONNECTIONS_PER_UID=1)
    with RawClient(daemon.socket) as holder:
        holder.request({"jsonrpc": "2.0", "method": "testapp.hold", "params": [gate.path], "id": 1})
        gate.wait_for(1)
        assert press(admin_user, mug, "add") == [
            ("error", "Add: the background service is busy; try again in a moment.")
        ]
        gate.open()
        assert holder.reply()["result"] == "released"


def test_a_call_still_queued_when_the_daemon_stops_is_its_message(admin_user, mug, live, gate):
    """One worker held, the call queued behind it, SIGTERM with a short drain: "shutting down"."""
    daemon = live("--workers", "1", DRAIN_TIMEOUT=1)
    with RawClient(daemon.socket) as holder:
        holder.request({"jsonrpc": "2.0", "method": "testapp.hold", "params": [gate.path], "id": 1})
        gate.wait_for(1)
        seen: list[list[tuple[str, str]]] = []
        presser = threading.Thread(target=lambda: seen.append(press(admin_user, mug, "add")))
        presser.start()
        poll(lambda: daemon.call("rpc.status")["queued"] >= 1)
        busy_workers_at_least(daemon, 1)
        daemon.signal(signal.SIGTERM)
        presser.join(30)
        gate.open()
    assert seen == [
        [("error", "Add: the background service is shutting down; try again in a moment.")]
    ]


def test_no_daemon_is_its_message(admin_user, mug, live):
    """The daemon stopped: "not running"."""
    daemon = live()
    assert daemon.stop() == 0
    assert press(admin_user, mug, "add") == [
        (
            "error",
            "Add: the background service is not running. Start it (manage.py runsocketservice) "
            "and try again.",
        )
    ]
