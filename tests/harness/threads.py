"""Client threads whose failures fail the test: pytest only warns about an exception raised in a
thread, and a thread still running at the end was never checked."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


class Clients:
    """Start ``work(*args)`` on a thread per *args*; :meth:`join` fails if any raised or hangs."""

    def __init__(self, work: Callable[..., Any], each: Iterable[tuple[Any, ...]]) -> None:
        self.errors: list[str] = []
        self._work = work
        self._threads = [threading.Thread(target=self._run, args=args) for args in each]

    def _run(self, *args: Any) -> None:
        try:
            self._work(*args)
        except BaseException as exc:
            self.errors.append(f"{args}: {exc!r}")

    def start(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout: float = 60.0) -> None:
        """Wait for every thread; fail if one raised or is still running after *timeout*."""
        for thread in self._threads:
            thread.join(timeout)
        running = sum(thread.is_alive() for thread in self._threads)
        assert running == 0, f"{running} client thread(s) never finished"
        assert self.errors == [], "\n".join(self.errors)
