"""``runsocketservice --reload``: start the daemon again when the project's code changes.

For development, as ``runserver`` does it, with Django's own file watching: this
process starts the daemon as a child and starts it again each time the child
exits with :data:`RELOAD_EXIT`. The child watches the files of every module it
imported (Django's ``StatReloader``, plus what apps add through
``autoreload_started``); on a change it drains as on SIGTERM (calls in flight
are answered) and exits with :data:`RELOAD_EXIT`. Unlike ``runserver``'s, the
daemon keeps the main thread (it owns the signals); the watching has a thread
of its own. If the daemon fails to start (a syntax error in a handler), this
process waits for the next change and tries again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from django.utils import autoreload

log = structlog.get_logger(__name__)

RELOAD_EXIT = 3
_CHILD = autoreload.DJANGO_AUTORELOAD_ENV


def is_child() -> bool:
    """Return True in the daemon that a reloading parent started."""
    return os.environ.get(_CHILD) == "true"


class _Reloader(autoreload.StatReloader):
    """Django's stat-based watcher, telling *on_change* instead of exiting the process."""

    def __init__(self, on_change: Callable[[Path], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def notify_file_changed(self, path: str | os.PathLike[str]) -> None:
        results = autoreload.file_changed.send(sender=self, file_path=path)
        if not any(handled for _, handled in results):  # e.g. templates reset themselves
            self._on_change(Path(path))


class CodeWatch:
    """In the daemon: watch the code in a thread; on a change, drain and ask for a restart."""

    def __init__(self) -> None:
        self.changed: Path | None = None
        self._stop = threading.Event()
        self._reloader = _Reloader(self._changed)

    def start(self) -> None:
        """Note every watched file's time now (a change right after start counts), then watch."""
        autoreload.autoreload_started.send(sender=self._reloader)
        seen = dict(self._reloader.snapshot_files())
        threading.Thread(
            target=_first_change,
            args=(self._reloader, seen, self._stop),
            name="socketsvc-reload",
            daemon=True,
        ).start()

    def stop(self) -> None:
        self._stop.set()

    def _changed(self, path: Path) -> None:
        self.changed = path
        log.info("code_changed", path=str(path), hint="draining, then starting again")
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon drains as on any SIGTERM


def _first_change(reloader: _Reloader, seen: dict[Path, float], stop: threading.Event) -> None:
    """Tell *reloader* of the first file changed since *seen*, unless *stop* is set first."""
    while not stop.wait(reloader.SLEEP_TIME):
        for path, mtime in reloader.snapshot_files():
            before = seen.get(path)
            seen[path] = mtime
            if before is not None and mtime > before:
                reloader.notify_file_changed(path)
                return


def _status(code: int) -> int:
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell says it


def run_parent(prepare: Callable[[], object]) -> int:
    """Start the daemon as a child, again after each code change; return its last status.

    *prepare* imports what the child would (the handlers), so that this process can
    wait for a fix when the child fails to start. SIGTERM, SIGINT and SIGHUP are
    passed on to the child, which runs in a process group of its own (a terminal's
    Ctrl-C reaches it once, through here).
    """
    args = autoreload.get_child_arguments()
    env = {**os.environ, _CHILD: "true"}
    while True:
        child = subprocess.Popen(args, env=env, process_group=0)
        stopping = threading.Event()

        def forward(
            signum: int, frame: FrameType | None, child: Any = child, stopping: Any = stopping
        ) -> None:
            if signum != signal.SIGHUP:
                stopping.set()
            if child.poll() is None:
                child.send_signal(signum)

        watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {signum: signal.signal(signum, forward) for signum in watched}
        try:
            status = child.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if status == RELOAD_EXIT:
            continue
        if stopping.is_set() or status == 0:
            return _status(status)
        reloader = _Reloader(lambda path: None)  # _first_change returns on the change
        with contextlib.suppress(Exception):  # the daemon has said why
            # check_errors() has the watcher watch the file that failed to import.
            autoreload.check_errors(prepare)()
        autoreload.autoreload_started.send(sender=reloader)
        seen = dict(reloader.snapshot_files())
        log.error(
            "daemon_exited",
            status=status,
            hint="waiting for a code change to start it again (Ctrl-C to stop)",
        )
        try:
            _first_change(reloader, seen, threading.Event())
        except KeyboardInterrupt:
            return _status(status)
