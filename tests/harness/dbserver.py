"""What the suite's throwaway database servers share: start, wait until answering, stop.

:class:`tests.harness.mariadb.MariaDB` and :class:`tests.harness.postgres.PostgreSQL` say how
to launch their server and how to query it; the rest is here.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.harness.waiting import poll


class ThrowawayServer:
    """A database server process of the suite's own, under *base*."""

    program = "server"  # its name in error messages
    stop_signal = signal.SIGTERM
    # The driver's error while the server is not answering yet.
    not_answering: type[Exception] = Exception

    def __init__(self, base: Path, log_file: Path) -> None:
        self.base = base
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the server process (subclasses say how)."""
        raise NotImplementedError

    def query(self, sql: str, args: Any = None, db: str | None = None) -> list[tuple[Any, ...]]:
        """Run *sql* on a side connection of its own (subclasses say how)."""
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers a query."""
        self.process = self.launch()
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{self.program} exited at start:\n{self.log_tail()}")
            try:
                self.query("SELECT 1")
            except self.not_answering:
                return False
            return True

        poll(answers, timeout, interval=0.05, why=self.log_tail)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the server with its stop signal and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self) -> str:
        """Return the last lines of the server's log."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except FileNotFoundError:
            return "(no server log)"


def migrate(server: ThrowawayServer, create: str, url: str) -> None:
    """Create the test database (*create*) and run every migration into it (*url*)."""
    from tests.harness.daemon import manage

    server.query(create)
    done = manage("migrate", "-v0", env={"DATABASE_URL": url}, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stderr}")
