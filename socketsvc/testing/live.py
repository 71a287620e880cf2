"""A real ``runsocketservice`` process against the test database, on a private socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test import TestCase, override_settings

from socketsvc.client import call_with, close_connections
from socketsvc.errors import SocketServiceError
from socketsvc.process.spawn import project_path, settings_module

# The daemon reads the test databases' names from here (see runsocketservice).
DATABASE_NAMES = "SOCKETSVC_DATABASE_NAMES"


def test_database_names() -> dict[str, str]:
    """Return each alias's test database name; raise if another process cannot open one."""
    names = {}
    for alias in connections:
        conn = connections[alias]
        if conn.vendor == "sqlite" and conn.is_in_memory_db():  # type: ignore[attr-defined]
            raise ImproperlyConfigured(
                f"the live service cannot open DATABASES[{alias!r}]'s in-memory test "
                "database from another process: set its TEST['NAME'] to a file path, or "
                "use socketsvc.testing.in_process"
            )
        names[alias] = str(conn.settings_dict["NAME"])
    return names


class LiveService:
    """``runsocketservice`` in a process of its own, serving the test databases.

    ``start()`` returns once it answers; while it runs, ``call()`` and
    ``notify()`` in this process reach it (``SOCKETSVC['SOCKET']`` points at
    its socket). *args* are passed to the command (``"--workers", "2"``), *env*
    is added to its environment.
    """

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
    ) -> None:
        self.args = list(args)
        self.env = dict(env or {})
        self.timeout = timeout
        self.directory = Path(tempfile.mkdtemp(prefix="socketsvc-test-"))
        self.socket = str(self.directory / "s.sock")
        self.log_file = self.directory / "service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._settings: Any = None

    def start(self) -> LiveService:
        """Start the process and wait until it answers (raise with its log if it cannot)."""
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module(),
            "PYTHONPATH": project_path(),
            DATABASE_NAMES: json.dumps(test_database_names()),
            **self.env,
        }
        command = [sys.executable, "-m", "django", "runsocketservice", "--socket", self.socket]
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [*command, *self.args], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        self._settings = override_settings(
            SOCKETSVC={**(getattr(settings, "SOCKETSVC", None) or {}), "SOCKET": self.socket}
        )
        self._settings.enable()
        self._wait_until_answering()
        return self

    def _wait_until_answering(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log()  # read before stop() removes the directory
                self.stop()
                raise RuntimeError(f"runsocketservice exited at start:\n{output}")
            try:
                call_with("rpc.ping", socket=self.socket, timeout=1.0)
            except SocketServiceError:
                time.sleep(0.05)
                continue
            return
        output = self.log()
        self.stop()
        raise RuntimeError(f"runsocketservice did not answer within {self.timeout:g} s:\n{output}")

    def wait_for_task(self, result: Any, timeout: float = 10.0) -> Any:
        """Refresh a ``TaskResult`` until the service has finished it; raise after *timeout*."""
        deadline = time.monotonic() + timeout
        while True:
            result.refresh()
            if result.is_finished:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {result.id} not finished within {timeout:g} s")
            time.sleep(0.05)

    def log(self) -> str:
        """Return what the service wrote (its JSON log lines)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop it as systemd would (SIGTERM, drained); return its exit status."""
        status = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            status = self.process.returncode
        if self._settings is not None:
            self._settings.disable()
            self._settings = None
        close_connections()
        shutil.rmtree(self.directory, ignore_errors=True)
        return status

    def __enter__(self) -> LiveService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LiveServiceMixin:
    """For ``TransactionTestCase``: one live service per test class (``cls.socketsvc``).

    ``socketsvc_args`` are passed to ``runsocketservice``, ``socketsvc_env`` added to its
    environment.
    """

    socketsvc_args: tuple[str, ...] = ()
    socketsvc_env: dict[str, str] | None = None
    socketsvc: LiveService

    @classmethod
    def setUpClass(cls) -> None:
        if issubclass(cls, TestCase):
            raise ImproperlyConfigured(
                f"{cls.__name__}: the live service is another process and cannot see a "
                "TestCase's uncommitted data; use TransactionTestCase, or InProcessMixin"
            )
        super().setUpClass()  # type: ignore[misc]
        cls.socketsvc = LiveService(*cls.socketsvc_args, env=cls.socketsvc_env).start()
        cls.addClassCleanup(cls.socketsvc.stop)  # type: ignore[attr-defined]
