"""``manage.py rundemo``: the demo shop with its daemon and its admin, until Ctrl-C.

It migrates the database, starts ``runsocketservice``, calls the shop's handlers
and prints the results; then (unless ``--once``) it creates the admin login,
starts the development server and keeps both running until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from socketsvc import ServiceUnavailable, call
from socketsvc.conf import get_config

MANAGE = Path(settings.BASE_DIR) / "manage.py"
DEMO_SKU = "MUG-01"
ADMIN_USERNAME = "admin"
STARTUP_TIMEOUT = 30.0


class Command(BaseCommand):
    help = "Run the socketsvc demo: the daemon, calls to the shop's handlers, and the admin."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="stop the daemon after the demo calls (no web server)",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=8000,
            help="port of the web server on 127.0.0.1 (default 8000, or a free one if taken)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = get_config()
        Path(config.SOCKET).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
        call_command("migrate", verbosity=0)
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        self.stdout.write(f"database: {engine}; socket: {config.SOCKET}")

        children: list[subprocess.Popen[bytes]] = []
        previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        try:
            with _terminal_foreground():
                try:
                    self._run(children, options)
                except KeyboardInterrupt:
                    self.stdout.write("\nstopping")
                finally:
                    _stop(children)
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
        failed = [child.returncode for child in children if child.returncode not in _CLEAN]
        if failed:
            raise CommandError(f"a child process exited with status {failed[0]}")

    def _run(self, children: list[subprocess.Popen[bytes]], options: dict[str, Any]) -> None:
        config = get_config()
        daemon = _spawn("runsocketservice")
        children.append(daemon)
        self._wait_ready(daemon, config.SOCKET)
        self._show("shop.stock_report")
        mug = self._show("shop.product", sku=DEMO_SKU)
        if mug["stock"] > 1:
            self._show("shop.sell", sku=DEMO_SKU, quantity=mug["stock"] - 1)
        self._show("shop.restock_low_stock")
        self._show("shop.stock_report")
        self._run_stock_count()
        if options["once"]:
            return
        password = self._ensure_admin()
        port = _free_port(options["port"])
        server = _spawn("runserver", f"127.0.0.1:{port}", "--noreload")
        children.append(server)
        url = f"http://127.0.0.1:{port}/admin/"
        self._wait_serving(server, url)
        self.stdout.write(
            "\nThe daemon and the admin are running.\n"
            f"  admin:  {url}shop/product/\n"
            f"  tasks:  {url}socketsvc/taskrecord/\n"
            f"  login:  {ADMIN_USERNAME} / {password}\n"
            "In another shell try:\n"
            "  .venv/bin/python manage.py socketctl call shop.restock sku=MUG-01 quantity=5\n"
            "  .venv/bin/python manage.py socketctl status\n"
            "Press Ctrl-C to stop."
        )
        self.stdout.flush()
        while daemon.poll() is None and server.poll() is None:
            time.sleep(0.2)
        name, stopped = ("daemon", daemon) if daemon.poll() is not None else ("web server", server)
        raise CommandError(f"the {name} exited by itself with status {stopped.returncode}")

    def _wait_ready(self, daemon: subprocess.Popen[bytes], socket_path: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise CommandError(f"the daemon exited with status {daemon.returncode}")
            try:
                call("rpc.ping", timeout=2, socket=socket_path)
            except ServiceUnavailable:
                time.sleep(0.1)
                continue
            return
        raise CommandError(f"the daemon did not answer within {STARTUP_TIMEOUT:g} s")

    def _wait_serving(self, server: subprocess.Popen[bytes], url: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise CommandError(f"the web server exited with status {server.returncode}")
            try:
                with urllib.request.urlopen(f"{url}login/", timeout=2):  # noqa: S310 (http://127.0.0.1)
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise CommandError(f"the web server did not answer within {STARTUP_TIMEOUT:g} s")

    def _ensure_admin(self) -> str:
        """Create or reset the demo's superuser; return its password (kept in VAR_DIR)."""
        password_file = Path(settings.VAR_DIR) / "admin-password"
        if not password_file.exists():
            password_file.touch(mode=0o600)
            password_file.write_text(secrets.token_urlsafe(9) + "\n")
        password = password_file.read_text().strip()
        user, _ = get_user_model().objects.get_or_create(username=ADMIN_USERNAME)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        return password

    def _run_stock_count(self) -> None:
        """Enqueue the stock-take task and follow it to its end, as the admin's page does."""
        from project.shop.tasks import stock_count
        from socketsvc.tasks import get_progress

        result = stock_count.enqueue(seconds_per_product=0.1)
        self.stdout.write(f"\n$ stock_count.enqueue()  # task {result.id}")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not result.is_finished and time.monotonic() < deadline:
            time.sleep(0.1)
            result.refresh()
        shown = get_progress(result.id)
        self.stdout.write(f"{result.status}, progress {shown}")
        if result.is_finished and result.status == "SUCCESSFUL":
            self.stdout.write(json.dumps(result.return_value, indent=2))

    def _show(self, method: str, **params: Any) -> Any:
        result = call(method, **params)
        shown = " ".join(f"{key}={value}" for key, value in params.items())
        self.stdout.write(f"\n$ socketctl call {method} {shown}\n{json.dumps(result, indent=2)}")
        return result


# Exit statuses of a child stopped by _stop(): a clean exit, or death by its signal.
_CLEAN = (0, -signal.SIGTERM)
# How long runserver may take to stop, beyond the daemon's drain.
_GRACE = 5.0


def _interrupt(signum: int, frame: object) -> None:
    """Treat SIGTERM like Ctrl-C, so the children are stopped too."""
    raise KeyboardInterrupt


def _spawn(*command: str) -> subprocess.Popen[bytes]:
    """Start ``manage.py <command>`` in a process group of its own.

    Ctrl-C then reaches only this command, which passes exactly one SIGTERM to
    each child: a second signal would make the daemon skip its drain.
    """
    return subprocess.Popen([sys.executable, str(MANAGE), *command], process_group=0)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """Send each child SIGTERM (the daemon drains; runserver stops), wait, and kill what is
    left after the grace period or at a second Ctrl-C.

    SIGTERM, not SIGINT: a demo started as a background job has SIGINT ignored, and its
    children inherit that.
    """
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + get_config().DRAIN_TIMEOUT + _GRACE
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            child.kill()
            child.wait()


@contextlib.contextmanager
def _terminal_foreground() -> Iterator[None]:
    """Make this process the terminal's foreground process group while the demo runs.

    Under ``make demo`` the terminal's Ctrl-C would otherwise also reach make,
    which reports "Interrupt" and fails however cleanly the demo stops.
    """
    try:
        terminal = os.open("/dev/tty", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        yield
        return
    previous = os.tcgetpgrp(terminal)
    if previous != os.getpgrp():  # started in the background: leave the terminal alone
        os.close(terminal)
        yield
        return
    # A background group changing the foreground group gets SIGTTOU; it is allowed.
    previous_sigttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
            os.tcsetpgrp(terminal, os.getpgrp())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(terminal, previous)
        signal.signal(signal.SIGTTOU, previous_sigttou)
        os.close(terminal)


def _free_port(preferred: int) -> int:
    """Return *preferred* if nothing listens on it on 127.0.0.1, else a free port."""
    with contextlib.closing(socket.socket()) as probe:
        # As runserver does, so a port left in TIME_WAIT by a previous run counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
