"""The event loop: one selectors loop owns every socket; handlers run on worker threads.

The loop accepts connections and admits them (:mod:`socketsvc.server.admission`),
reads request lines through each connection's transport, hands messages to
the router, queues calls for the worker pool, and writes replies with
backpressure. Workers and the readiness probe reach it only
through the :class:`~socketsvc.server.handback.Handback`. Timers (idle and request
deadlines, the watchdog, ``STATUS=``) run between selector turns.

Its life is one state machine::

    SERVING --begin_drain()--> DRAINING --no connections, no calls--> STOPPED (clean)
                                   |------- DRAIN_TIMEOUT ----------> STOPPED (waiting calls
                                                                      get -32004)
    any state --stop_now()--> STOPPED

While draining the listener is closed (a successor can bind, or inherit the
activated socket), connections already open are served and each is closed
once it has nothing in flight.
"""

from __future__ import annotations

import enum
import select
import selectors
import time
from collections.abc import Callable
from typing import Any

import structlog

from socketsvc.conf import Config, put_in_force
from socketsvc.methods.builtins import Tasks, builtin_methods
from socketsvc.methods.dispatch import Dispatcher, Outcome
from socketsvc.server.access import AccessPolicy
from socketsvc.server.connection import Connection
from socketsvc.server.connections import Clients
from socketsvc.server.counters import Counters
from socketsvc.server.handback import Handback
from socketsvc.server.health import Health
from socketsvc.server.listener import Listener
from socketsvc.server.router import Router
from socketsvc.server.selector import LoopSelector
from socketsvc.server.threads import Job, ThreadPool

log = structlog.get_logger(__name__)

# While draining, a connection quiet this long with nothing in flight is
# closed: long enough for a request already on its way to arrive.
DRAIN_GRACE = 0.1
_ACCEPTS_PER_TURN = 64


class State(enum.Enum):
    """Where the loop is in its life."""

    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class Loop:
    """The selectors loop around one listener (see the module docstring)."""

    def __init__(
        self,
        listener: Listener,
        config: Config,
        dispatcher: Dispatcher,
        health: Health,
        tasks: Tasks | None = None,
    ) -> None:
        put_in_force(config)
        self.config = config
        self.listener = listener
        self.dispatcher = dispatcher
        self.health = health
        self.tasks = tasks
        self.selector = LoopSelector()
        self.handback = Handback()
        self.selector.register(self.handback, selectors.EVENT_READ, self.handback.run_pending)
        self.counters = Counters()
        self.router = Router(
            builtin_methods(self.status, dispatcher.registry, tasks), dispatcher, self.counters
        )
        self.pool = ThreadPool(
            config.WORKERS, dispatcher, self.handback, self._job_done, config.LOG_PARAMS
        )
        self.clients = Clients(
            config,
            self.selector,
            self.router,
            self.pool,
            self.counters,
            self._policy(config),
            self._resume_accepting,
            self.handback.run_pending,
        )
        self.state = State.SERVING
        self._accepting = False
        self._deadline = 0.0
        self._stop_requested = False
        self._next_sweep = 0.0

    # -- public surface --------------------------------------------------------

    @property
    def serving(self) -> bool:
        """Return True until a drain begins."""
        return self.state is State.SERVING

    @property
    def state_name(self) -> str:
        """Return the state's name (serving, draining, stopped)."""
        return self.state.value

    def watch(self, fileobj: Any, callback: Callable[[], None]) -> None:
        """Run *callback* on the loop whenever *fileobj* is readable."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)

    def run(self) -> bool:
        """Serve until stopped; return True if every request received was answered."""
        self.pool.start()
        self._set_accepting(True)
        clients = self.clients
        while True:
            now = time.monotonic()
            if self._stop_requested:
                self.state = State.STOPPED
                return clients.outstanding == 0
            if self.state is State.DRAINING:
                if not clients.conns and not clients.outstanding and not self._tasks_busy():
                    self.state = State.STOPPED
                    return True
                if now >= self._deadline:
                    self.state = State.STOPPED
                    return self._abandon_at_deadline()
            for key, mask in self.selector.select(self._timeout(now)):
                self._dispatch(key.data, mask)
            clients.handle_held_if_room()
            self._tick(time.monotonic())

    def begin_drain(self) -> None:
        """Stop accepting and finish what is in flight (SIGTERM)."""
        if self.state is not State.SERVING:
            return
        self.state = State.DRAINING
        self.clients.draining = True
        if self.tasks is not None:
            self.tasks.begin_drain()
        self._deadline = time.monotonic() + self.config.DRAIN_TIMEOUT
        log.info("draining", in_flight=self.clients.outstanding, connections=len(self.clients))
        self.health.stopping(self)
        self._set_accepting(False)
        # close() only, never shutdown(): that would break an activated socket
        # for the successor that inherits it.
        self.listener.close()
        for conn in self.clients:
            self.clients.finish_if_done(conn)

    def stop_now(self) -> None:
        """Stop at the next turn, whatever is in flight (a second SIGTERM)."""
        self._stop_requested = True

    def apply(self, config: Config) -> None:
        """Put reloaded settings in force (socket settings excepted)."""
        self.config = config
        self.clients.apply(config, self._policy(config))
        self.pool.resize(config.WORKERS)
        if self.health.role is not None:
            self.health.role.apply(config)
        self.pool.log_params = config.LOG_PARAMS
        self.dispatcher.check_idle_after = config.DB_CHECK_AFTER_IDLE
        put_in_force(config)

    def status(self) -> dict[str, Any]:
        """Return what ``rpc.status`` reports."""
        return self.health.status(self)

    def close(self) -> None:
        """Close every socket the loop owns and stop the workers."""
        for conn in self.clients:
            self.clients.close(conn)
        self._set_accepting(False)
        self.listener.close()
        self.pool.stop(timeout=1.0)
        self.handback.close()
        self.selector.close()

    # -- turns and timers ------------------------------------------------------

    def _policy(self, config: Config) -> AccessPolicy:
        return AccessPolicy.build(config.ALLOWED_UIDS, config.ALLOWED_GIDS, self.listener.group())

    def _job_done(self, job: Job, outcome: Outcome, sent: bool = False) -> None:
        self.clients.job_done(job, outcome, sent)

    def _dispatch(self, data: Any, mask: int) -> None:
        """Run one event's callback; a bug in it costs at most that one connection."""
        try:
            if type(data) is Connection:
                self.clients.on_io(data, mask)
            else:
                data()
        except Exception:
            log.exception("event_handler_failed")
            if type(data) is Connection:
                self.clients.close(data)

    def _timeout(self, now: float) -> float:
        if self.state is State.DRAINING:
            return min(DRAIN_GRACE, max(0.0, self._deadline - now))
        timeout = max(0.0, self._next_sweep - now)
        ping = self.health.seconds_to_ping(now)
        return timeout if ping is None else min(timeout, ping)

    def _tick(self, now: float) -> None:
        self.health.tick(self, now)
        if self.state is State.DRAINING:
            for conn in self.clients:
                if conn.quiet and now - conn.transport.last_active >= DRAIN_GRACE:
                    self.clients.close(conn)
        elif now >= self._next_sweep:
            self._next_sweep = now + min(
                1.0, self.config.IDLE_TIMEOUT / 4, self.config.REQUEST_TIMEOUT / 4
            )
            self.clients.sweep(now)

    def _abandon_at_deadline(self) -> bool:
        """Answer -32004 to requests never started; return False if any goes unanswered."""
        refused = self.clients.refuse_unstarted()
        running = self.clients.outstanding
        log.error(
            "drain_deadline_passed",
            abandoned_running=running,
            abandoned_tasks=self._tasks_busy(),
            refused_waiting=refused,
            deadline=self.config.DRAIN_TIMEOUT,
        )
        return running == 0 and not self._tasks_busy()

    def _tasks_busy(self) -> int:
        return 0 if self.tasks is None else self.tasks.busy

    # -- accepting -------------------------------------------------------------

    def _set_accepting(self, enabled: bool) -> None:
        if enabled == self._accepting or (enabled and self.listener.closed):
            return
        if enabled and self.listener.shared:
            self.selector.register_exclusive(self.listener.sock, self._on_accept)
        elif enabled:
            self.selector.register(self.listener.sock, selectors.EVENT_READ, self._on_accept)
        else:
            self.selector.unregister(self.listener.sock)
        self._accepting = enabled

    def _resume_accepting(self) -> None:
        """A connection closed or became evictable: accept again if paused at the cap."""
        if not self._accepting and self.state is State.SERVING:
            self._set_accepting(True)

    def _on_accept(self) -> None:
        try:
            self._accept_some()
        finally:
            if self.listener.shared and self._accepting:
                self.selector.rotate(self.listener.sock)

    def _accept_some(self) -> None:
        clients = self.clients
        for _ in range(_ACCEPTS_PER_TURN):
            if len(clients) >= self.config.MAX_CONNECTIONS:
                if not _has_pending(self.listener):
                    return
                if not clients.evict(None):
                    log.warning("connection_limit_reached", limit=self.config.MAX_CONNECTIONS)
                    self._set_accepting(False)
                    return
            try:
                sock, _ = self.listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("accept_failed", error=str(exc))
                return
            clients.add(sock)


def _has_pending(listener: Listener) -> bool:
    """Return True if a client waits in the listen backlog."""
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    return bool(poller.poll(0))
