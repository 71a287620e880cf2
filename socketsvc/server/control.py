"""What signals do to a running loop: drain, stop at once, reload, wake the task runner."""

from __future__ import annotations

import signal
from collections.abc import Callable

import structlog

from socketsvc.conf import Config, reloaded
from socketsvc.logsetup import reopen_log_files
from socketsvc.server.loop import Loop
from socketsvc.server.signals import WAKE_SIGNAL

log = structlog.get_logger(__name__)


class Control:
    """What signals do to a running loop."""

    def __init__(self, loop: Loop, reread: Callable[[], Config] | None) -> None:
        self.loop = loop
        self._reread = reread

    def on_signal(self, signum: int) -> None:
        """SIGTERM/SIGINT: drain, then stop at once on a second one; SIGHUP: reload."""
        name = signal.Signals(signum).name
        if signum == WAKE_SIGNAL:
            if self.loop.tasks is not None:  # from the master: a sibling has a task ready
                self.loop.tasks.wake(None, forward=False)
            return
        if signum == signal.SIGHUP:
            self.reload()
        elif self.loop.state.value != "serving":
            log.warning("second_signal_stopping_now", signal=name)
            self.loop.stop_now()
        else:
            log.info("signal", signal=name)
            self.loop.begin_drain()

    def reload(self) -> None:
        """Re-read SOCKETSVC and reopen log files; settings that need a restart stay as they are."""
        loop = self.loop
        loop.health.reloading()
        reopen_log_files()
        if self._reread is None:
            loop.health.reloaded(loop)
            return
        try:
            fresh = self._reread()
        except Exception as exc:
            log.error("reload_failed", error=str(exc), hint="the previous settings stay in force")
            loop.health.reloaded(loop, applied=False)
            return
        config, changed, deferred = reloaded(loop.config, fresh)
        loop.apply(config)
        if deferred:
            log.warning("reload_needs_restart", settings=deferred)
        log.info("reloaded", changed=changed)
        loop.health.reloaded(loop)
