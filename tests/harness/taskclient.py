"""Drive ``manage.py taskclient`` (a process that enqueues and reads tasks) from a test."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.harness.daemon import REPO, manage_env
from tests.harness.waiting import poll


class TaskClientError(Exception):
    """The client process answered with an error (``.kind`` is the exception class path)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class TaskClient:
    """A separate process on *database_url*, acting as the web tier does."""

    def __init__(self, database_url: str, socket_path: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "taskclient"],
            cwd=REPO,
            env=manage_env({"DATABASE_URL": database_url, "SOCKETSVC_SOCKET": socket_path, **env}),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, op: str, **args: Any) -> Any:
        """Send one request and return its answer; raise TaskClientError for an error."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"taskclient exited with {self.process.wait(10)}")
        answer = json.loads(line)
        if "error" in answer:
            raise TaskClientError(answer["error"], answer["message"])
        return answer["ok"]

    def enqueue(self, task: str, *args: Any, **options: Any) -> dict[str, Any]:
        """Enqueue ``tests.testapp.tasks.<task>(*args)``; *options*: kwargs, priority, ..."""
        return self.ask("enqueue", task=task, args=list(args), **options)

    def result(self, result_id: str) -> dict[str, Any]:
        return self.ask("result", id=result_id)

    def finished(self, result_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the task has finished; return its result."""
        return poll(
            lambda: (r := self.result(result_id))["status"] in ("SUCCESSFUL", "FAILED") and r,
            timeout,
            interval=0.02,
        )

    def status_becomes(self, result_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the task has *status*; return its result."""
        return poll(
            lambda: (r := self.result(result_id))["status"] == status and r, timeout, interval=0.02
        )

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def seconds_between(earlier: str, later: str) -> float:
    """Return seconds between two timestamps as the client prints them."""
    from datetime import datetime

    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
