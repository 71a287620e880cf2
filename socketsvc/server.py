"""The event loop: one selectors loop owns all socket I/O; handlers run on worker threads.

The loop accepts connections, reads into per-connection line buffers (never
more than the message limit for one line), parses requests, answers ``rpc.*``
itself, queues other calls for the worker pool, and writes replies with
backpressure. Workers hand results back through a deque and a wake-up socket;
signals wake the loop through ``signal.set_wakeup_fd``. The loop also pings the
systemd watchdog, so a wedged loop gets restarted.

SIGTERM or SIGINT drains: stop accepting (an activated socket stays open in
its manager, so new clients wait in its backlog for the successor), keep
serving the connections already open, close each once it has nothing in
flight, and stop when none are left or at ``DRAIN_TIMEOUT``. Jobs still
waiting for a worker then get ``-32004`` (they never ran); a second signal
stops at once. SIGHUP re-reads the settings.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import django
import structlog

from . import lifecycle, protocol
from .access import AccessPolicy
from .conf import RESTART_ONLY, Config
from .connection import BatchReply, Connection
from .dispatch import Call, Dispatcher, Outcome
from .protocol import JSONValue, Request, RPCError
from .systemd import Notifier
from .workers import Job, WorkerPool, log_request

log = structlog.get_logger("socketsvc.server")

_READ_CHUNK = 65536
# While draining, a connection quiet this long with nothing in flight is
# closed: long enough for a request already on its way to arrive.
_DRAIN_GRACE = 0.1


@dataclass
class Stats:
    """Counters for ``rpc.status``; only the loop thread writes them."""

    started: float = field(default_factory=time.monotonic)
    connections: int = 0
    requests: int = 0
    notifications: int = 0
    errors: int = 0
    dropped_replies: int = 0
    reloads: int = 0


class Server:
    """The selectors loop around one listening socket (see the module docstring)."""

    def __init__(
        self,
        listener: socket.socket,
        config: Config,
        dispatcher: Dispatcher,
        *,
        on_listener_closed: Callable[[], None] | None = None,
        reload_config: Callable[[], Config] | None = None,
        on_reload: Callable[[], None] | None = None,
        notifier: Notifier | None = None,
        socket_gid: int | None = None,
    ) -> None:
        self.config = config
        self._socket_gid = socket_gid
        self.access = AccessPolicy.build(config.ALLOWED_UIDS, config.ALLOWED_GIDS, socket_gid)
        self.limits = self._limits(config)
        self._per_uid: collections.Counter[int] = collections.Counter()
        self.dispatcher = dispatcher
        self.listener = listener
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}
        self.stats = Stats()
        self.notifier = notifier or Notifier()
        self._conn_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._accepting = False
        self._waiting_for_room = False  # some connection holds messages until the queue has room
        self._refusing = False  # past the drain deadline: answer held requests with -32004
        self._outstanding = 0  # jobs queued or running, whether or not their client stayed
        self._draining = False
        self._drain_deadline = 0.0
        self._stop_now = False
        self._ready = threading.Event()
        self._announced_ready = False
        self._next_status = 0.0
        self._next_sweep = 0.0
        self._on_listener_closed = on_listener_closed
        self._reload_config = reload_config
        self._on_reload = on_reload
        self._wake_r, self._wake_w = socket.socketpair()
        self._sig_r, self._sig_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w, self._sig_r, self._sig_w):
            sock.setblocking(False)
        self._wake_pending = False
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self.selector.register(self._sig_r, selectors.EVENT_READ, self._on_signal_wake)
        self.pool = WorkerPool(
            config.WORKERS, config.MAX_QUEUED, dispatcher, self._wake, config.LOG_PARAMS
        )
        self._signals_seen: collections.deque[int] = collections.deque()
        self._builtins: dict[str, Callable[[], JSONValue]] = {
            "rpc.ping": lambda: "pong",
            "rpc.status": self.status,
            "rpc.methods": self.methods,
        }

    @staticmethod
    def _limits(config: Config) -> protocol.Limits:
        return protocol.Limits(config.MAX_BATCH, config.MAX_JSON_DEPTH, config.MAX_NUMBER_DIGITS)

    # -- public surface ----------------------------------------------------

    def serve_forever(self) -> bool:
        """Run until drained or stopped; return True if every request received was answered."""
        self.pool.start()
        self._set_accepting(True)
        clean = True
        while True:
            self._handle_signals()
            if self._stop_now:
                clean = self._in_flight() == 0
                break
            if self._draining and not self.conns and not self._outstanding:
                break
            if self._draining and time.monotonic() >= self._drain_deadline:
                clean = self._abandon_at_deadline()
                break
            for key, mask in self.selector.select(self._select_timeout()):
                self._dispatch_event(key, mask)
            self._deliver_results()
            self._handle_held_if_room()
            now = time.monotonic()
            self.notifier.ping_if_due(now)
            self._announce(now)
            self._sweep(now)
        return clean

    def mark_ready(self) -> None:
        """Record that the service can do its work (safe from any thread)."""
        self._ready.set()
        self._wake()

    def install_signal_handlers(self) -> None:
        """Route SIGTERM/SIGINT to a drain and SIGHUP to a reload; main thread only."""
        signal.set_wakeup_fd(self._sig_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._note_signal)

    def request_shutdown(self) -> None:
        """Begin a drain, as SIGTERM does (safe from any thread)."""
        self._signals_seen.append(signal.SIGTERM)
        self._wake()

    def close(self) -> None:
        """Close every socket the loop owns and stop the workers."""
        for conn in list(self.conns.values()):
            self._close(conn)
        self._close_listener()
        self.pool.stop(timeout=1.0)
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        for sock in (self._wake_r, self._wake_w, self._sig_r, self._sig_w):
            sock.close()
        self.selector.close()

    def status(self) -> dict[str, JSONValue]:
        """Return what ``rpc.status`` reports."""
        return {
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self.stats.started, 3),
            "state": "draining" if self._draining else "serving",
            "ready": self._ready.is_set(),
            "connections": len(self.conns),
            "connections_accepted": self.stats.connections,
            "requests": self.stats.requests,
            "notifications": self.stats.notifications,
            "errors": self.stats.errors,
            "dropped_replies": self.stats.dropped_replies,
            "reloads": self.stats.reloads,
            "workers": self.pool.size,
            "busy_workers": self.pool.busy,
            "queued": self.pool.jobs.qsize(),
            "handlers": len(self.dispatcher.registry),
            "access": self.access.describe(),
            "python": sys.version.split()[0],
            "django": django.get_version(),
            "config": dataclasses.asdict(self.config),
            **lifecycle.stats.snapshot(),
        }

    def methods(self) -> list[dict[str, str]]:
        """Return what ``rpc.methods`` reports."""
        builtin = [
            {"name": "rpc.methods", "signature": "rpc.methods()", "doc": "List the methods."},
            {"name": "rpc.ping", "signature": "rpc.ping()", "doc": "Answer 'pong'."},
            {"name": "rpc.status", "signature": "rpc.status()", "doc": "Report counters."},
        ]
        return builtin + [method.describe() for method in self.dispatcher.registry]

    # -- signals, wake-ups, readiness, reload --------------------------------

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record: the loop acts on it (set_wakeup_fd has already woken it).
        self._signals_seen.append(signum)

    def _wake(self) -> None:
        # One byte per loop turn is enough: workers finishing together share it.
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _on_wake(self, sock: Any, mask: int) -> None:
        self._on_signal_wake(sock, mask)
        # Cleared after draining and before the loop reads the done deque: a
        # worker that finds it set has a byte on its way or its result seen.
        self._wake_pending = False

    def _on_signal_wake(self, sock: Any, mask: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while sock.recv(4096):
                pass

    def _handle_signals(self) -> None:
        while self._signals_seen:
            signum = self._signals_seen.popleft()
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                self._reload()
            elif self._draining:
                log.warning("second_signal_stopping_now", signal=name)
                self._stop_now = True
            else:
                log.info("draining", signal=name, in_flight=self._in_flight())
                self._begin_drain()

    def _announce(self, now: float) -> None:
        """Send READY=1 once ready, then STATUS= at most once a second (when under systemd)."""
        if not self._announced_ready:
            if self._ready.is_set() and not self._draining:
                self._announced_ready = True
                self._next_status = now + 1.0
                self.notifier.ready(self._status_line())
                log.info("ready")
        elif self.notifier.enabled and now >= self._next_status:
            self._next_status = now + 1.0
            self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        return (
            f"{'Draining' if self._draining else 'Serving'}: {len(self.conns)} connections, "
            f"{self.pool.busy}/{self.pool.size} workers busy, {self.stats.requests} requests, "
            f"{self.stats.errors} errors"
        )

    def _reload(self) -> None:
        if self._reload_config is None:
            return
        self.notifier.reloading()
        try:
            fresh = self._reload_config()
        except Exception as exc:
            log.error("reload_failed", error=str(exc), hint="the previous settings stay in force")
            self.notifier.ready(self._status_line())
            return
        old = dataclasses.asdict(self.config)
        new = dataclasses.asdict(fresh)
        changed = {key: [old[key], new[key]] for key in new if new[key] != old[key]}
        deferred = sorted(RESTART_ONLY & changed.keys())
        for key in deferred:
            new[key] = old[key]
        self.config = Config(**new)
        self.access = AccessPolicy.build(
            self.config.ALLOWED_UIDS, self.config.ALLOWED_GIDS, self._socket_gid
        )
        self.limits = self._limits(self.config)
        self.pool.resize(self.config.WORKERS)
        self.pool.max_queued = self.config.MAX_QUEUED
        self.pool.log_params = self.config.LOG_PARAMS
        self.dispatcher.check_idle_after = self.config.DB_CHECK_AFTER_IDLE
        for conn in self.conns.values():
            conn.framer.max_bytes = self.config.MAX_MESSAGE_BYTES
        if self._on_reload is not None:
            self._on_reload()
        self.stats.reloads += 1
        if deferred:
            log.warning("reload_needs_restart", settings=deferred)
        log.info("reloaded", changed=changed)
        self.notifier.ready(self._status_line())

    # -- drain -------------------------------------------------------------

    def _begin_drain(self) -> None:
        self._draining = True
        self._drain_deadline = time.monotonic() + self.config.DRAIN_TIMEOUT
        self.notifier.stopping(self._status_line())
        self._close_listener()
        for conn in list(self.conns.values()):
            self._finish_if_done(conn)

    def _in_flight(self) -> int:
        return self._outstanding

    def _abandon_at_deadline(self) -> bool:
        """Answer -32004 to requests never started; return False if any goes unanswered."""
        self._refusing = True
        for conn in list(self.conns.values()):
            self._handle_held(conn)
        waiting = self.pool.take_waiting()
        for job in waiting:
            job.conn.pending -= 1
            self._outstanding -= 1
            outcome = self.dispatcher.refusal(job.call.request, self._shutting_down_error())
            self._complete(job, outcome)
        running = self._in_flight()
        log.error(
            "drain_deadline_passed",
            abandoned_running=running,
            refused_waiting=len(waiting),
            deadline=self.config.DRAIN_TIMEOUT,
        )
        for conn in list(self.conns.values()):
            self._flush(conn)
        return running == 0

    @staticmethod
    def _shutting_down_error() -> RPCError:
        return RPCError(
            protocol.SHUTTING_DOWN,
            "Shutting down: the service stopped before running this request; retry",
        )

    def _select_timeout(self) -> float:
        now = time.monotonic()
        timeout = self._sweep_interval()
        if self._draining:
            timeout = min(_DRAIN_GRACE, max(0.0, self._drain_deadline - now))
        ping = self.notifier.seconds_to_ping(now)
        return timeout if ping is None else min(timeout, ping)

    # -- listener ----------------------------------------------------------

    def _set_accepting(self, enabled: bool) -> None:
        if enabled == self._accepting or self.listener.fileno() < 0:
            return
        if enabled:
            self.selector.register(self.listener, selectors.EVENT_READ, self._on_accept)
        else:
            self.selector.unregister(self.listener)
        self._accepting = enabled

    def _close_listener(self) -> None:
        if self.listener.fileno() < 0:
            return
        self._set_accepting(False)
        # close() only: never shutdown(), which would break an activated
        # socket for the successor that inherits it.
        self.listener.close()
        if self._on_listener_closed is not None:
            self._on_listener_closed()

    def _on_accept(self, listener: Any, mask: int) -> None:
        for _ in range(64):
            if len(self.conns) >= self.config.MAX_CONNECTIONS:
                log.warning("connection_limit_reached", limit=self.config.MAX_CONNECTIONS)
                self._set_accepting(False)
                return
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("accept_failed", error=str(exc))
                return
            sock.setblocking(False)
            conn = Connection(next(self._conn_ids), sock, self.config.MAX_MESSAGE_BYTES)
            self.conns[conn.id] = conn
            self.stats.connections += 1
            self._admit(conn)

    def _admit(self, conn: Connection) -> None:
        """Check the peer against the access policy and the per-uid limit; refuse or serve."""
        if not self.access.allows(conn.uid, conn.gid):
            log.warning(
                "connection_refused",
                reason="access_denied",
                peer_uid=conn.uid,
                peer_gid=conn.gid,
                peer_pid=conn.pid,
            )
            self._send_error_and_close(
                conn,
                protocol.ACCESS_DENIED,
                f"Access denied: uid {conn.uid} may not use this service",
            )
            return
        if self._per_uid[conn.uid] >= self.config.MAX_CONNECTIONS_PER_UID:
            log.warning(
                "connection_refused",
                reason="too_many_connections_for_uid",
                peer_uid=conn.uid,
                peer_pid=conn.pid,
                limit=self.config.MAX_CONNECTIONS_PER_UID,
            )
            self._send_error_and_close(
                conn,
                protocol.SERVER_BUSY,
                f"Server busy: uid {conn.uid} already has "
                f"{self.config.MAX_CONNECTIONS_PER_UID} connections open",
            )
            return
        self._per_uid[conn.uid] += 1
        conn.admitted = True
        self._update_interest(conn)

    def _send_error_and_close(
        self, conn: Connection, code: int, message: str, data: JSONValue = None
    ) -> None:
        """Send one error reply (id null), read nothing more, and close once it is out."""
        self.stats.errors += 1
        conn.closing = True
        conn.held.clear()
        self._send(conn, protocol.encode(protocol.error_response(None, code, message, data)))
        self._finish_if_done(conn)

    # -- connections -------------------------------------------------------

    def _dispatch_event(self, key: selectors.SelectorKey, mask: int) -> None:
        """Run one I/O callback; a bug in it costs at most that one connection."""
        try:
            key.data(key.fileobj, mask)
        except Exception:
            log.exception("event_handler_failed", fd=key.fd)
            conn = next((c for c in self.conns.values() if c.sock is key.fileobj), None)
            if conn is not None:
                self._close(conn)

    def _update_interest(self, conn: Connection) -> None:
        if conn.closed:
            return
        events = 0
        reading_allowed = (
            not conn.held
            and conn.pending < self.config.MAX_PENDING_PER_CONNECTION
            and len(conn.out) < self.config.MAX_OUTPUT_BYTES
        )
        if not (conn.eof or conn.closing) and reading_allowed:
            events |= selectors.EVENT_READ
        if conn.out:
            events |= selectors.EVENT_WRITE
        if events == conn.events:
            return
        if conn.events == 0:
            self.selector.register(conn.sock, events, self._on_io(conn))
        elif events == 0:
            self.selector.unregister(conn.sock)
        else:
            self.selector.modify(conn.sock, events, self._on_io(conn))
        conn.events = events

    def _on_io(self, conn: Connection) -> Callable[[Any, int], None]:
        def handle(sock: Any, mask: int) -> None:
            if mask & selectors.EVENT_WRITE:
                self._flush(conn)
            if mask & selectors.EVENT_READ and not conn.closed:
                self._read(conn)

        return handle

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.events:
            self.selector.unregister(conn.sock)
            conn.events = 0
        conn.sock.close()
        del self.conns[conn.id]
        if conn.admitted:
            self._per_uid[conn.uid] -= 1
            if not self._per_uid[conn.uid]:
                del self._per_uid[conn.uid]
        if not self._draining and len(self.conns) < self.config.MAX_CONNECTIONS:
            self._set_accepting(True)

    def _finish_if_done(self, conn: Connection) -> None:
        """Close a connection that has nothing more to do.

        While draining, that includes one whose requests are all answered: a
        client's next request then finds it closed before anything was read,
        so a client can safely send it again, to the successor.
        """
        if conn.closed or not conn.idle:
            return
        served = self._draining and conn.requests and not conn.framer.pending
        if conn.eof or conn.closing or served:
            self._close(conn)

    def _handle_held_if_room(self) -> None:
        if not self._waiting_for_room or self.pool.full:
            return
        self._waiting_for_room = False
        for conn in list(self.conns.values()):
            if conn.held:
                self._handle_held(conn)
                if not conn.closed:
                    self._update_interest(conn)
                    self._finish_if_done(conn)

    def _needs_worker(self, message: protocol.Message) -> bool:
        if isinstance(message, Request):
            return message.method not in self._builtins
        if isinstance(message, protocol.Batch):
            return any(self._needs_worker(item) for item in message.items)
        return False

    def _handle_held(self, conn: Connection) -> None:
        """Handle *conn*'s messages in order, holding back work while the queue is full."""
        while conn.held and not conn.closed:
            message = conn.held[0]
            if self.pool.full and not self._refusing and self._needs_worker(message):
                self._waiting_for_room = True
                return
            conn.held.popleft()
            self._handle_message(conn, message)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(min(_READ_CHUNK, conn.framer.room()))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.last_active = time.monotonic()
        if not data:
            conn.eof = True
            rest = conn.framer.take_rest()
            if rest is not None:
                conn.held.append(protocol.parse(rest, self.limits))
                self._handle_held(conn)
            self._update_interest(conn)
            self._finish_if_done(conn)
            return
        try:
            lines = conn.framer.feed(data)
        except protocol.MessageTooLarge as exc:
            self._refuse_oversize(conn, exc.limit)
            return
        if conn.framer.pending == 0:
            conn.partial_since = None
        elif conn.partial_since is None or lines:
            conn.partial_since = conn.last_active
        limits = self.limits
        conn.held.extend(protocol.parse(line, limits) for line in lines)
        self._handle_held(conn)
        self._update_interest(conn)

    def _refuse_oversize(self, conn: Connection, limit: int) -> None:
        log.warning("message_too_large", conn=conn.id, peer_pid=conn.pid, limit=limit)
        self._send_error_and_close(
            conn,
            protocol.MESSAGE_TOO_LARGE,
            f"Message too large: a request line may hold at most {limit} bytes; "
            "closing the connection",
            {"limit": limit},
        )

    def _send(self, conn: Connection, data: bytes) -> None:
        if conn.closed:
            self.stats.dropped_replies += 1
            return
        conn.out += data
        self._flush(conn)
        if not conn.closed and len(conn.out) > self.config.MAX_OUTPUT_BYTES:
            # The client sends but does not read: stop buffering for it.
            log.warning(
                "output_cap_exceeded",
                conn=conn.id,
                peer_pid=conn.pid,
                unsent=len(conn.out),
                limit=self.config.MAX_OUTPUT_BYTES,
            )
            self.stats.dropped_replies += 1
            self._close(conn)

    def _flush(self, conn: Connection) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # The client went away; what it was sent is lost with it.
                self.stats.dropped_replies += 1
                log.info("client_gone_before_reply", conn=conn.id, peer_pid=conn.pid)
                self._close(conn)
                return
            del conn.out[:sent]
        conn.last_active = time.monotonic()
        self._update_interest(conn)
        self._finish_if_done(conn)

    # -- requests ----------------------------------------------------------

    def _handle_message(self, conn: Connection, message: protocol.Message) -> None:
        conn.requests += 1
        if isinstance(message, protocol.Batch):
            self._handle_batch(conn, message)
        elif isinstance(message, Request):
            reply = self._start(conn, message, None)
            if reply:
                self._send(conn, reply)
        else:
            self.stats.errors += 1
            error = message["error"]
            log.warning("bad_message", conn=conn.id, peer_pid=conn.pid, error=error["message"])
            self._send(conn, protocol.encode(message))

    def _handle_batch(self, conn: Connection, batch: protocol.Batch) -> None:
        collector = BatchReply(len(batch.items))
        conn.batches += 1
        whole: bytes | None = None
        for item in batch.items:
            if isinstance(item, Request):
                reply = self._start(conn, item, collector)
                if reply is None:
                    continue
            else:
                self.stats.errors += 1
                reply = protocol.encode(item)
            whole = collector.add(reply or None)
        self._complete_batch(conn, whole)

    def _complete_batch(self, conn: Connection, whole: bytes | None) -> None:
        if whole is None:
            return
        conn.batches -= 1
        if whole:
            self._send(conn, whole)
        else:
            self._finish_if_done(conn)

    def _start(self, conn: Connection, request: Request, batch: BatchReply | None) -> bytes | None:
        """Answer *request* now (builtins, errors) or queue it; return the immediate reply.

        Returns None when the request went to a worker, b"" when a notification
        needs no reply, else the encoded reply.
        """
        if request.is_notification:
            self.stats.notifications += 1
        else:
            self.stats.requests += 1
        received = time.monotonic()
        request_id = next(self._request_ids)
        try:
            routed = self._route(request)
        except RPCError as exc:
            outcome = self.dispatcher.refusal(request, exc)
        except Exception as exc:
            outcome = self.dispatcher.refusal(
                request, RPCError(protocol.INTERNAL_ERROR, "Internal error: see the service log")
            )
            outcome = dataclasses.replace(outcome, exception=exc)
        else:
            if isinstance(routed, bytes):
                if not request.method.startswith("rpc."):
                    log_request(request_id, conn, request.method, received, Outcome(routed))
                return routed
            self.pool.submit(Job(request_id, conn, routed, batch, received))
            conn.pending += 1
            self._outstanding += 1
            return None
        self.stats.errors += 1
        log_request(request_id, conn, request.method, received, outcome)
        return outcome.reply or b""

    def _route(self, request: Request) -> bytes | Call:
        """Return a builtin's reply, or the call a worker must run; raise RPCError."""
        if self._refusing:
            raise self._shutting_down_error()
        builtin = self._builtins.get(request.method)
        if builtin is None:
            return self.dispatcher.resolve(request)
        if request.params:
            raise RPCError(protocol.INVALID_PARAMS, f"Invalid params: {request.method} takes none")
        if request.is_notification:
            return b""
        return protocol.encode(protocol.result_response(request.id, builtin()))

    def _deliver_results(self) -> None:
        done = self.pool.done
        while done:
            job, outcome = done.popleft()
            job.conn.pending -= 1
            self._outstanding -= 1
            self._complete(job, outcome)

    def _complete(self, job: Job, outcome: Outcome) -> None:
        conn = job.conn
        if outcome.error_code is not None:
            self.stats.errors += 1
        if job.batch is not None:
            whole = job.batch.add(outcome.reply)
            if conn.closed:
                if whole:
                    self.stats.dropped_replies += 1
                return
            self._complete_batch(conn, whole)
        elif conn.closed:
            if outcome.reply is not None:
                self.stats.dropped_replies += 1
            return
        elif outcome.reply is not None:
            self._send(conn, outcome.reply)
        if not conn.closed:
            self._update_interest(conn)
            self._finish_if_done(conn)

    def _sweep(self, now: float) -> None:
        """Close idle connections: past IDLE_TIMEOUT, or at once (after a grace) when draining."""
        if self._draining:
            for conn in list(self.conns.values()):
                if conn.quiet and now - conn.last_active >= _DRAIN_GRACE:
                    self._close(conn)
            return
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval()
        idle_limit = self.config.IDLE_TIMEOUT
        request_limit = self.config.REQUEST_TIMEOUT
        for conn in list(self.conns.values()):
            if conn.closing:
                continue
            if conn.partial_since is not None and now - conn.partial_since > request_limit:
                log.warning("request_timeout", conn=conn.id, peer_pid=conn.pid, limit=request_limit)
                self._send_error_and_close(
                    conn,
                    protocol.REQUEST_TIMEOUT,
                    f"Request timeout: a request line stayed incomplete for {request_limit:g} s; "
                    "closing the connection",
                )
            elif conn.quiet and now - conn.last_active > idle_limit:
                log.info("idle_connection_closed", conn=conn.id, peer_pid=conn.pid)
                self._close(conn)

    def _sweep_interval(self) -> float:
        return min(1.0, self.config.IDLE_TIMEOUT / 4, self.config.REQUEST_TIMEOUT / 4)
