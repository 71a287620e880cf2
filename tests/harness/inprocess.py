"""The event loop run in the test's own process, on a thread, with handlers of the test's own.

For tests of the loop's state machine and the pool that need to reach inside:
call the loop on its own thread through its handback, see its state, inject a
failure. Everything else about it is real: a bound Unix socket, real clients.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socketsvc.conf import build_config
from socketsvc.methods.dispatch import Dispatcher
from socketsvc.methods.registry import Registry
from socketsvc.server.health import Health
from socketsvc.server.listener import bind_unix_socket
from socketsvc.server.loop import Loop


@dataclass
class Running:
    """A loop serving on *path* in a thread; *clean* is run()'s answer once it returned."""

    loop: Loop
    path: str
    thread: threading.Thread
    clean: bool | None = None

    def on_loop(self, action: Callable[[], Any]) -> None:
        """Run *action* on the loop's thread."""
        self.loop.handback.put(action)

    def wait_stopped(self, timeout: float = 20.0) -> bool:
        """Wait for run() to return; return its answer."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the loop did not stop"
        assert self.clean is not None
        return self.clean


@contextmanager
def serving(
    tmp: Path, handlers: dict[str, Callable[..., Any]], **settings: Any
) -> Iterator[Running]:
    """Serve *handlers* (name -> function) on a socket in *tmp* until the block ends."""
    registry = Registry()
    for name, func in handlers.items():
        registry.add(func, name)
    path = str(tmp / "inproc.sock")
    config = build_config({"SOCKET": path, **settings})
    loop = Loop(bind_unix_socket(path), config, Dispatcher(registry), Health())
    running = Running(loop, path, threading.Thread(target=lambda: None))

    def run() -> None:
        running.clean = loop.run()

    running.thread = threading.Thread(target=run, name="inprocess-loop", daemon=True)
    running.thread.start()
    try:
        yield running
    finally:
        if running.thread.is_alive():
            running.on_loop(loop.stop_now)
            running.thread.join(10)
        loop.close()
