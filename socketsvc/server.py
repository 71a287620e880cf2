"""The event loop: one selectors loop owns all socket I/O; handlers run on worker threads.

The loop accepts connections, reads into per-connection line buffers (never
more than the message limit for one line), parses requests, answers ``rpc.*``
itself, queues other calls for a bounded pool of worker threads, and writes
replies with backpressure. Workers hand results back through a deque and a
wake-up socket; signals wake the loop through ``signal.set_wakeup_fd``.

SIGTERM or SIGINT drains: stop accepting, refuse new requests, finish the ones
in flight up to ``DRAIN_TIMEOUT``, deliver their replies, return. A second
signal stops at once.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import selectors
import signal
import socket
import struct
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
from .conf import Config
from .dispatch import Call, Dispatcher, Outcome
from .protocol import JSONValue, Request, RPCError

log = structlog.get_logger("socketsvc.server")

_PEERCRED = struct.Struct("3i")
_READ_CHUNK = 65536


@dataclass
class Stats:
    """Counters for ``rpc.status``; only the loop thread writes them."""

    started: float = field(default_factory=time.monotonic)
    connections: int = 0
    requests: int = 0
    notifications: int = 0
    errors: int = 0
    dropped_replies: int = 0


class Connection:
    """One client: its socket, peer credentials, buffers and in-flight count."""

    __slots__ = (
        "batches",
        "closed",
        "closing",
        "eof",
        "events",
        "framer",
        "gid",
        "id",
        "last_active",
        "out",
        "pending",
        "pid",
        "sock",
        "uid",
    )

    def __init__(self, conn_id: int, sock: socket.socket, max_bytes: int) -> None:
        self.id = conn_id
        self.sock = sock
        self.framer = protocol.LineFramer(max_bytes)
        self.out = bytearray()
        self.pending = 0
        self.batches = 0
        self.eof = False
        self.closing = False
        self.closed = False
        self.events = 0
        self.last_active = time.monotonic()
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            self.pid, self.uid, self.gid = _PEERCRED.unpack(raw)
        except OSError:
            self.pid = self.uid = self.gid = -1

    @property
    def idle(self) -> bool:
        """Return True if nothing is in flight or waiting to be sent."""
        return self.pending == 0 and not self.out


class BatchReply:
    """Collects the replies of one batch and sends them as one array when complete."""

    __slots__ = ("conn", "remaining", "replies")

    def __init__(self, conn: Connection, size: int) -> None:
        self.conn = conn
        self.remaining = size
        self.replies: list[bytes] = []

    def add(self, reply: bytes | None) -> bytes | None:
        """Record one member's reply; return the whole batch reply once all are in."""
        if reply is not None:
            self.replies.append(reply.rstrip(b"\n"))
        self.remaining -= 1
        if self.remaining:
            return None
        if not self.replies:
            return b""
        return b"[" + b",".join(self.replies) + b"]\n"


@dataclass(slots=True)
class Job:
    """A call queued for a worker, and where its reply goes."""

    conn: Connection
    call: Call
    batch: BatchReply | None
    queued: float


class WorkerPool:
    """A fixed set of threads that run calls inside the request lifecycle."""

    def __init__(
        self, size: int, max_queued: int, dispatcher: Dispatcher, wake: Callable[[], None]
    ) -> None:
        self.size = size
        self.dispatcher = dispatcher
        self.jobs: queue.Queue[Job | None] = queue.Queue(max_queued)
        self.done: collections.deque[tuple[Job, Outcome]] = collections.deque()
        self.busy = 0
        self._busy_lock = threading.Lock()
        self._wake = wake
        self._threads = [
            threading.Thread(target=self._work, name=f"socketsvc-worker-{n}", daemon=True)
            for n in range(size)
        ]

    def start(self) -> None:
        """Start the threads."""
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> bool:
        """Queue *job*; return False if the queue is full."""
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def _work(self) -> None:
        try:
            while True:
                next_expiry = lifecycle.close_expired_connections()
                try:
                    job = self.jobs.get(timeout=next_expiry)
                except queue.Empty:
                    continue
                if job is None:
                    return
                with self._busy_lock:
                    self.busy += 1
                try:
                    outcome = self.dispatcher.execute(job.call)
                finally:
                    with self._busy_lock:
                        self.busy -= 1
                self.done.append((job, outcome))
                self._wake()
        finally:
            lifecycle.close_thread_connections()

    def stop(self, timeout: float) -> bool:
        """Ask every thread to exit once idle; return True if all did within *timeout*."""
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self.jobs.put(None, timeout=max(timeout, 0.01))
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)


class Server:
    """The selectors loop around one listening socket (see the module docstring)."""

    def __init__(
        self,
        listener: socket.socket,
        config: Config,
        dispatcher: Dispatcher,
        on_listener_closed: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.listener = listener
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._accepting = False
        self._draining = False
        self._drain_deadline = 0.0
        self._stop_now = False
        self._next_sweep = 0.0
        self._on_listener_closed = on_listener_closed
        self._wake_r, self._wake_w = socket.socketpair()
        self._sig_r, self._sig_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w, self._sig_r, self._sig_w):
            sock.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self.selector.register(self._sig_r, selectors.EVENT_READ, self._on_wake)
        self.pool = WorkerPool(config.WORKERS, config.MAX_QUEUED, dispatcher, self._wake)
        self._signals_seen: collections.deque[int] = collections.deque()
        self._builtins: dict[str, Callable[[], JSONValue]] = {
            "rpc.ping": lambda: "pong",
            "rpc.status": self.status,
            "rpc.methods": self.methods,
        }

    # -- public surface ----------------------------------------------------

    def serve_forever(self) -> bool:
        """Run until drained or stopped; return True if every in-flight request was answered."""
        self.pool.start()
        self._set_accepting(True)
        clean = True
        while True:
            self._handle_signals()
            if self._stop_now:
                clean = self._in_flight() == 0
                break
            if self._draining and self._drained():
                break
            if self._draining and time.monotonic() >= self._drain_deadline:
                clean = False
                log.error("drain_deadline_passed", in_flight=self._in_flight())
                break
            for key, mask in self.selector.select(self._select_timeout()):
                self._dispatch_event(key, mask)
            self._deliver_results()
            self._sweep_idle()
        return clean

    def _dispatch_event(self, key: selectors.SelectorKey, mask: int) -> None:
        """Run one I/O callback; a bug in it costs at most that one connection."""
        try:
            key.data(key.fileobj, mask)
        except Exception:
            log.exception("event_handler_failed", fd=key.fd)
            conn = next((c for c in self.conns.values() if c.sock is key.fileobj), None)
            if conn is not None:
                self._close(conn)

    def install_signal_handlers(self) -> None:
        """Route SIGTERM/SIGINT to a drain (a second one stops at once); main thread only."""
        signal.set_wakeup_fd(self._sig_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
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
            "connections": len(self.conns),
            "connections_accepted": self.stats.connections,
            "requests": self.stats.requests,
            "notifications": self.stats.notifications,
            "errors": self.stats.errors,
            "dropped_replies": self.stats.dropped_replies,
            "workers": self.pool.size,
            "busy_workers": self.pool.busy,
            "queued": self.pool.jobs.qsize(),
            "handlers": len(self.dispatcher.registry),
            "python": sys.version.split()[0],
            "django": django.get_version(),
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

    # -- signals and wake-ups ----------------------------------------------

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record: the loop acts on it (set_wakeup_fd has already woken it).
        self._signals_seen.append(signum)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _on_wake(self, sock: Any, mask: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while sock.recv(4096):
                pass

    def _handle_signals(self) -> None:
        while self._signals_seen:
            signum = self._signals_seen.popleft()
            if self._draining:
                log.warning("second_signal_stopping_now", signal=signal.Signals(signum).name)
                self._stop_now = True
            else:
                log.info("draining", signal=signal.Signals(signum).name)
                self._begin_drain()

    def _begin_drain(self) -> None:
        self._draining = True
        self._drain_deadline = time.monotonic() + self.config.DRAIN_TIMEOUT
        self._close_listener()
        for conn in list(self.conns.values()):
            if conn.idle and conn.batches == 0:
                self._close(conn)

    def _drained(self) -> bool:
        return not self.conns and self._in_flight() == 0

    def _in_flight(self) -> int:
        return sum(conn.pending for conn in self.conns.values())

    def _select_timeout(self) -> float:
        timeout = 1.0
        if self._draining:
            timeout = min(timeout, max(0.0, self._drain_deadline - time.monotonic()))
        return timeout

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
            conn = Connection(next(self._ids), sock, self.config.MAX_MESSAGE_BYTES)
            self.conns[conn.id] = conn
            self.stats.connections += 1
            self._update_interest(conn)

    # -- connections -------------------------------------------------------

    def _update_interest(self, conn: Connection) -> None:
        if conn.closed:
            return
        events = 0
        reading_allowed = (
            conn.pending < self.config.MAX_PENDING_PER_CONNECTION
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
        if not self._draining and len(self.conns) < self.config.MAX_CONNECTIONS:
            self._set_accepting(True)

    def _finish_if_done(self, conn: Connection) -> None:
        """Close a connection that has nothing more to do."""
        if conn.closed or not conn.idle or conn.batches:
            return
        if conn.eof or conn.closing or self._draining:
            self._close(conn)

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
                self._handle_line(conn, rest)
            self._update_interest(conn)
            self._finish_if_done(conn)
            return
        try:
            lines = conn.framer.feed(data)
        except protocol.MessageTooLarge as exc:
            self._refuse_oversize(conn, exc.limit)
            return
        for line in lines:
            self._handle_line(conn, line)
            if conn.closed:
                return
        self._update_interest(conn)

    def _refuse_oversize(self, conn: Connection, limit: int) -> None:
        log.warning("message_too_large", conn=conn.id, peer_pid=conn.pid, limit=limit)
        self.stats.errors += 1
        conn.closing = True
        self._send(
            conn,
            protocol.encode(
                protocol.error_response(
                    None,
                    protocol.MESSAGE_TOO_LARGE,
                    f"Message too large: a request line may hold at most {limit} bytes; "
                    "closing the connection",
                    {"limit": limit},
                )
            ),
        )
        self._finish_if_done(conn)

    def _send(self, conn: Connection, data: bytes) -> None:
        if conn.closed:
            self.stats.dropped_replies += 1
            return
        conn.out += data
        self._flush(conn)

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

    def _handle_line(self, conn: Connection, line: bytes) -> None:
        message = protocol.parse(line)
        if isinstance(message, protocol.Batch):
            self._handle_batch(conn, message)
        elif isinstance(message, Request):
            reply = self._start(conn, message, None)
            if reply:
                self._send(conn, reply)
        else:
            self.stats.errors += 1
            self._send(conn, protocol.encode(message))

    def _handle_batch(self, conn: Connection, batch: protocol.Batch) -> None:
        collector = BatchReply(conn, len(batch.items))
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
        try:
            routed = self._route(request)
        except RPCError as exc:
            return self._error_reply(request, exc)
        except Exception:
            log.exception("resolve_failed", method=request.method)
            return self._error_reply(
                request, RPCError(protocol.INTERNAL_ERROR, "Internal error: see the service log")
            )
        if isinstance(routed, bytes):
            return routed
        if not self.pool.submit(Job(conn, routed, batch, time.monotonic())):
            log.warning("queue_full", method=request.method, queued=self.config.MAX_QUEUED)
            return self._error_reply(
                request,
                RPCError(
                    protocol.SERVER_BUSY,
                    f"Server busy: {self.config.MAX_QUEUED} requests already queued; retry later",
                ),
            )
        conn.pending += 1
        return None

    def _route(self, request: Request) -> bytes | Call:
        """Return a builtin's reply, or the call a worker must run; raise RPCError."""
        if self._draining:
            raise RPCError(
                protocol.SHUTTING_DOWN,
                "Shutting down: the service is draining and takes no new requests; retry",
            )
        builtin = self._builtins.get(request.method)
        if builtin is None:
            return self.dispatcher.resolve(request)
        if request.params:
            raise RPCError(protocol.INVALID_PARAMS, f"Invalid params: {request.method} takes none")
        return self._immediate(request, builtin())

    def _error_reply(self, request: Request, exc: RPCError) -> bytes:
        self.stats.errors += 1
        if request.is_notification:
            return b""
        return protocol.encode(protocol.error_response(request.id, exc.code, exc.message, exc.data))

    @staticmethod
    def _immediate(request: Request, result: JSONValue) -> bytes:
        if request.is_notification:
            return b""
        return protocol.encode(protocol.result_response(request.id, result))

    def _deliver_results(self) -> None:
        done = self.pool.done
        while done:
            job, outcome = done.popleft()
            conn = job.conn
            conn.pending -= 1
            if outcome.error_code is not None:
                self.stats.errors += 1
            self._log_outcome(job, outcome)
            if job.batch is not None:
                whole = job.batch.add(outcome.reply)
                if conn.closed:
                    if whole:
                        self.stats.dropped_replies += 1
                    continue
                self._complete_batch(conn, whole)
            elif conn.closed:
                if outcome.reply is not None:
                    self.stats.dropped_replies += 1
                continue
            elif outcome.reply is not None:
                self._send(conn, outcome.reply)
            if not conn.closed:
                self._update_interest(conn)
                self._finish_if_done(conn)

    @staticmethod
    def _log_outcome(job: Job, outcome: Outcome) -> None:
        conn = job.conn
        log.info(
            "request",
            method=job.call.method.name,
            request_id=job.call.request.id,
            conn=conn.id,
            peer_pid=conn.pid,
            peer_uid=conn.uid,
            duration_ms=round((time.monotonic() - job.queued) * 1000, 3),
            outcome="ok" if outcome.error_code is None else "error",
            error_code=outcome.error_code,
            error_type=outcome.error_type,
        )

    def _sweep_idle(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        limit = self.config.IDLE_TIMEOUT
        for conn in list(self.conns.values()):
            if conn.idle and not conn.batches and now - conn.last_active > limit:
                log.info("idle_connection_closed", conn=conn.id, peer_pid=conn.pid)
                self._close(conn)
