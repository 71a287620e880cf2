"""Run ``manage.py runsocketservice`` as a real subprocess, and talk to it over its socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from socketsvc.client import ServiceUnavailable, invoke

REPO = Path(__file__).resolve().parent.parent


def socketsvc_settings(path: Path, **values: Any) -> dict[str, str]:
    """Write SOCKETSVC overrides to *path*; return the env that makes tests.settings read them.

    The daemon reads the file again on SIGHUP, so rewriting it tests a reload.
    """
    path.write_text(json.dumps(values))
    return {"TEST_SOCKETSVC_FILE": str(path)}


class Daemon:
    """One daemon process serving *socket_path*, with its log captured to a file."""

    def __init__(self, socket_path: str, env: dict[str, str] | None = None, *args: str) -> None:
        self.socket = socket_path
        self.args = list(args)
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.log_path = Path(socket_path).with_suffix(f".{id(self)}.log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Daemon:
        """Start the process; by default wait until it answers rpc.ping."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "runsocketservice",
                    "--socket",
                    self.socket,
                    *self.args,
                ],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll rpc.ping until it answers; fail at once if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            try:
                # An activated socket accepts before the daemon is up: the
                # ping then waits in the backlog, so allow it time.
                remaining = max(deadline - time.monotonic(), 0.1)
                if invoke("rpc.ping", socket=self.socket, timeout=remaining) == "pong":
                    return
            except ServiceUnavailable:
                time.sleep(0.05)
        raise RuntimeError(f"daemon did not answer within {timeout} s:\n{self.log()}")

    def call(self, method: str, *args: Any, timeout: float = 20.0, **params: Any) -> Any:
        """Call *method* through the public client."""
        return invoke(method, list(args) if args else params, socket=self.socket, timeout=timeout)

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
