"""The one way tests run ``manage.py``: a daemon as a real subprocess, and any other command.

:class:`Daemon` starts ``runsocketservice`` (bound to its own socket, on a socket
an :class:`~tests.harness.activation.Activator` passes as fd 3, or on a terminal), waits
until it answers, runs it to its exit for start-up failures, and reads its log.
Tests get one from the ``launch`` fixture (or ``start_daemon``), which kills it at teardown.
:func:`manage` runs any other command to completion. :func:`socketsvc_settings`
is the one way to give a daemon SOCKETSVC values (re-read on SIGHUP): ``Daemon(settings=...)``
and the fixtures call it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from socketsvc.client import ServiceUnavailable, call_with
from tests.harness.waiting import poll

if TYPE_CHECKING:
    from tests.harness.activation import Activator

REPO = Path(__file__).resolve().parents[2]


def socketsvc_settings(path: Path, **values: Any) -> dict[str, str]:
    """Write SOCKETSVC values to *path*; return the env that makes tests.settings read them.

    The one way a test gives a daemon SOCKETSVC values (``Daemon(settings=...)`` and the
    fixtures call it); the daemon reads the file again on SIGHUP, so rewriting it
    (:meth:`Daemon.reconfigure`) tests a reload.
    """
    path.write_text(json.dumps(values))
    return {SETTINGS_FILE: str(path)}


# The variable tests/settings.py reads the SOCKETSVC values file from.
SETTINGS_FILE = "TEST_SOCKETSVC_FILE"


def manage_env(env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
    """Return the environment of a ``manage.py`` subprocess (the test settings unless *env* says).

    Variables named in *unset* are removed from the inherited environment.
    """
    inherited = {key: value for key, value in os.environ.items() if key not in unset}
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }


def manage(
    *args: str,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py ARGS`` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=manage_env(env, unset),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Runs in the child: move the inherited fd to 3, name this pid, exec the daemon.
_EXEC_WITH_FD3 = """
import os, sys
fd = int(os.environ.pop("ACTIVATION_FD"))
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = "socketsvc"
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


class Daemon:
    """One ``runsocketservice`` process serving *socket_path*, its output captured to a file.

    With *activation* (an Activator, or an fd number) it inherits its listening
    socket as fd 3, the way systemd passes it; with *socket_option* False it
    takes the socket from its settings, as a user's command line does.
    """

    def __init__(
        self,
        socket_path: str,
        env: dict[str, str] | None = None,
        *args: str,
        activation: Activator | int | None = None,
        socket_option: bool = True,
        unset: tuple[str, ...] = (),
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.socket = socket_path
        self.args = list(args)
        self.env = manage_env(env, unset)
        # Where its SOCKETSVC values are (with *settings*: beside its socket).
        self.settings_path: Path | None = None
        if settings is not None:
            where = next(parent for parent in Path(socket_path).parents if parent.is_dir())
            self.settings_path = where / f"{Path(socket_path).stem}.settings.json"
            self.env.update(socketsvc_settings(self.settings_path, **settings))
        self.activation = activation
        self.socket_option = socket_option and activation is None
        # Beside the socket, or in the nearest directory that exists (the daemon may create it).
        where = next(parent for parent in Path(socket_path).parents if parent.is_dir())
        self.log_path = where / f"{Path(socket_path).stem}.{id(self)}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """Return the daemon's command line."""
        prefix = [sys.executable]
        if self.activation is not None:
            prefix += ["-c", _EXEC_WITH_FD3]
        socket_args = ["--socket", self.socket] if self.socket_option else []
        return [*prefix, "manage.py", "runsocketservice", *socket_args, *self.args]

    def start(
        self, wait: bool = True, output: IO[Any] | int | None = None, ready: bool = False
    ) -> Daemon:
        """Start the process (output to its log file, or *output*); by default wait for a ping.

        With *ready*, also wait until it has probed its databases (READY=1): until
        then its probe holds a database session of its own.
        """
        env = dict(self.env)
        pass_fds: tuple[int, ...] = ()
        if self.activation is not None:
            fd = self.activation if isinstance(self.activation, int) else self.activation.fileno()
            env["ACTIVATION_FD"] = str(fd)
            pass_fds = (fd,)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log if output is None else output,
                stderr=subprocess.STDOUT if output is None else output,
                pass_fds=pass_fds,
            )
        if wait:
            self.wait_ready()
        if ready:
            poll(lambda: self.call("rpc.status")["ready"], why=self.log)
        return self

    def reconfigure(self, **settings: Any) -> None:
        """Replace its SOCKETSVC values (read again at its next SIGHUP)."""
        assert self.settings_path is not None, "started without settings="
        socketsvc_settings(self.settings_path, **settings)

    def run_to_exit(self, timeout: float = 60.0) -> tuple[int, str]:
        """Run until the process exits on its own (a start-up failure, a detaching parent);
        one still running after *timeout* is killed and fails the test."""
        self.start(wait=False)
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout:g} s:\n{self.log()}") from None
        return code, self.log()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until rpc.ping answers; fail at once if the process dies."""

        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            try:
                # An activated socket accepts before the daemon is up: the ping
                # then waits in the backlog, so allow it time.
                return call_with("rpc.ping", socket=self.socket, timeout=timeout) == "pong"
            except ServiceUnavailable:
                return False

        poll(answers, timeout, interval=0.05, why=self.log)

    def call(self, method: str, *args: Any, timeout: float = 20.0, **params: Any) -> Any:
        """Call *method* through the public client."""
        return call_with(
            method, list(args) if args else params, socket=self.socket, timeout=timeout
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the daemon and return its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def kill(self) -> None:
        """Kill the daemon without ceremony (for cleanup)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        """Return the JSON log lines as dicts (non-JSON lines are skipped)."""
        events = []
        for line in self.log().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


class RawClient:
    """A bare socket for protocol tests: send bytes, read reply lines."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, obj: Any) -> None:
        self.send(json.dumps(obj).encode() + b"\n")

    def line(self) -> bytes:
        """Return the next reply line; raise EOFError if the server closed first."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed by server; unterminated: {self.buffer[:200]!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def reply(self) -> Any:
        return json.loads(self.line())

    def closed_by_server(self) -> bool:
        """Return True once the server has closed the connection (after any pending lines)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
