"""The open client connections, and everything the loop does to one of them.

A new socket is admitted (the access policy, the per-uid cap with eviction of
idle connections, see :mod:`socketsvc.server.admission`), then each turn's bytes go
transport -> lines -> parsed messages -> router -> replies now, jobs for the
pool. A message is held back, and its connection read no further, while the
pool's queue is full (backpressure). A job's outcome comes back through
:meth:`Clients.job_done`. A connection closes when it has nothing more to do:
its client left, it was refused, or (while draining) all it sent is answered.
Everything here runs on the loop thread.

(A little over 350 lines: reading, routing, writing and closing one
connection share its state and its few invariants, which stay in one file.)
"""

from __future__ import annotations

import itertools
import selectors
import socket
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from socketsvc import protocol
from socketsvc.conf import Config
from socketsvc.methods.dispatch import Outcome
from socketsvc.observe import events
from socketsvc.server.access import AccessPolicy
from socketsvc.server.admission import Admission
from socketsvc.server.connection import Connection
from socketsvc.server.counters import Counters
from socketsvc.server.router import Router
from socketsvc.server.threads import Job, ThreadPool
from socketsvc.server.transport import peer_groups

log = structlog.get_logger(__name__)


class Clients:
    """The connections of one loop (see the module docstring)."""

    def __init__(  # noqa: PLR0917
        self,
        config: Config,
        selector: selectors.BaseSelector,
        router: Router,
        pool: ThreadPool,
        counters: Counters,
        policy: AccessPolicy,
        on_room: Callable[[], None],
        settle: Callable[[], None],
    ) -> None:
        self.selector = selector
        self.router = router
        self.pool = pool
        self.counters = counters
        self.admission = Admission()
        self.conns: dict[int, Connection] = {}
        self.accepted = 0
        self.evicted = 0
        self.outstanding = 0  # jobs queued or running, whether or not their client stayed
        self.draining = False
        self.apply(config, policy)
        self._on_room = on_room
        # Runs what workers handed back (a reply a worker sent itself is bookkept there).
        self._settle = settle
        self._ids = itertools.count(1)
        self._waiting_for_room = False  # a connection holds messages until the queue has room

    def __len__(self) -> int:
        return len(self.conns)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self.conns.values()))

    def apply(self, config: Config, policy: AccessPolicy) -> None:
        """Put (re)loaded settings in force."""
        self.config = config
        self.policy = policy
        self.limits = protocol.Limits(
            config.MAX_BATCH, config.MAX_JSON_DEPTH, config.MAX_NUMBER_DIGITS
        )
        for conn in self.conns.values():
            conn.transport.framer.max_bytes = config.MAX_MESSAGE_BYTES
            self._update_interest(conn)

    # -- admitting ---------------------------------------------------------------

    def add(self, sock: socket.socket) -> None:
        """Take a freshly accepted socket; admit or refuse it."""
        conn = Connection(next(self._ids), sock, self.selector, self.config.MAX_MESSAGE_BYTES)
        self.conns[conn.id] = conn
        self.accepted += 1
        events.connection_opened()
        peer = conn.peer
        sock = conn.transport.sock
        self._admit(conn, self.policy.allows(peer.uid, peer.gid, lambda: peer_groups(sock)))

    def _admit(self, conn: Connection, allowed: bool) -> None:
        """Refuse a peer the policy does not allow, or one whose uid's connections are all busy."""
        peer = conn.peer
        if not allowed:
            log.warning(
                "connection_refused",
                reason="access_denied",
                peer_uid=peer.uid,
                peer_gid=peer.gid,
                peer_pid=peer.pid,
            )
            message = f"Access denied: uid {peer.uid} may not use this service"
            self.refuse(conn, protocol.ACCESS_DENIED, message)
            return
        limit = self.config.MAX_CONNECTIONS_PER_UID
        if self.admission.of_uid(peer.uid) >= limit and not self.evict(peer.uid):
            log.warning(
                "connection_refused",
                reason="too_many_connections_for_uid",
                peer_uid=peer.uid,
                peer_pid=peer.pid,
                limit=limit,
            )
            self.refuse(
                conn,
                protocol.SERVER_BUSY,
                f"Server busy: uid {peer.uid} already has {limit} connections open, all busy",
            )
            return
        self.admission.admit(conn)
        self._update_interest(conn)

    def evict(self, uid: int | None) -> bool:
        """Close the longest-idle evictable connection (of *uid*); False if there is none.

        The replies workers sent but the loop has not bookkept yet are taken in
        first: until then their connections look busy, and one served after them
        would be taken for the idlest.
        """
        self._settle()
        victim = self.admission.idlest(uid)
        if victim is None:
            return False
        self.evicted += 1
        events.connection_evicted()
        log.info(
            "idle_connection_evicted",
            conn=victim.id,
            peer_pid=victim.peer.pid,
            cap="MAX_CONNECTIONS" if uid is None else "MAX_CONNECTIONS_PER_UID",
        )
        self.close(victim)
        return True

    def refuse(self, conn: Connection, code: int, message: str, data: Any = None) -> None:
        """Send one error reply (id null), read nothing more, and close once it is out."""
        self.counters.errors += 1
        events.connection_refused(code)
        conn.closing = True
        conn.held.clear()
        self._send(conn, protocol.encode(protocol.error_response(None, code, message, data)))
        self.finish_if_done(conn)

    # -- reading and routing -----------------------------------------------------

    def on_io(self, conn: Connection, mask: int) -> None:
        """Handle the selector's events for *conn*."""
        if mask & selectors.EVENT_WRITE and not conn.transport.flush():
            self._lost(conn)
            return
        if mask & selectors.EVENT_READ and not conn.closed:
            self._read(conn)
        else:
            self._update_interest(conn)
            self.finish_if_done(conn)

    def _read(self, conn: Connection) -> None:
        transport = conn.transport
        try:
            lines = transport.read()
        except protocol.MessageTooLarge as exc:
            log.warning("message_too_large", conn=conn.id, peer_pid=conn.peer.pid, limit=exc.limit)
            self.refuse(
                conn,
                protocol.MESSAGE_TOO_LARGE,
                f"Message too large: a request line may hold at most {exc.limit} bytes; "
                "closing the connection",
                {"limit": exc.limit},
            )
            return
        except OSError:
            self.close(conn)
            return
        if lines is None:
            rest = transport.framer.take_rest()
            if rest is not None:
                conn.held.append(protocol.parse(rest, self.limits))
        else:
            if transport.framer.pending == 0:
                conn.partial_since = None
            elif conn.partial_since is None or lines:
                conn.partial_since = transport.last_active
            if lines:
                limits = self.limits
                conn.held.extend(protocol.parse(line, limits) for line in lines)
                self.admission.touch(conn)
        self._handle_held(conn)
        self._update_interest(conn)
        self.finish_if_done(conn)

    def _handle_held(self, conn: Connection) -> None:
        """Handle *conn*'s messages in order, holding back work while the queue is full."""
        router = self.router
        while conn.held and not conn.closed:
            message = conn.held[0]
            if (
                self.pool.waiting >= self.config.MAX_QUEUED
                and not router.refusing
                and router.needs_worker(message)
            ):
                self._waiting_for_room = True
                return
            conn.held.popleft()
            reply, jobs = router.route(conn, message)
            for job in jobs:
                self.pool.submit(job)
            conn.pending += len(jobs)
            self.outstanding += len(jobs)
            if reply:
                self._send(conn, reply)

    def handle_held_if_room(self) -> None:
        """Go on with held messages once the queue has room (or calls are being refused)."""
        if self._waiting_for_room and (
            self.router.refusing or self.pool.waiting < self.config.MAX_QUEUED
        ):
            self._waiting_for_room = False
            for conn in self:
                if conn.held:
                    self._handle_held(conn)
                    self._update_interest(conn)
                    self.finish_if_done(conn)

    # -- replying ----------------------------------------------------------------

    def job_done(self, job: Job, outcome: Outcome, sent: bool = False) -> None:
        """Deliver a worker's outcome (loop thread, through the handback); *sent*: the worker
        has sent the reply itself (what the socket did not take is queued)."""
        conn = job.conn
        conn.pending -= 1
        self.outstanding -= 1
        if outcome.error_code is not None:
            self.counters.errors += 1
        reply = outcome.reply
        if job.batch is not None:
            reply = job.batch.add(reply)
            if reply is not None:
                conn.batches -= 1
        if sent:
            self._check_output(conn)
        elif reply:
            self._send(conn, reply)
        elif reply is not None and conn.closed:
            self.counters.dropped_replies += 1
        if not conn.closed:
            self.admission.touch(conn)
            self._update_interest(conn)
            self.finish_if_done(conn)
        self._on_room()  # a connection may have become evictable

    def _send(self, conn: Connection, data: bytes) -> None:
        if conn.closed:
            self.counters.dropped_replies += 1
            return
        if not conn.transport.write(data):
            self._lost(conn)
            return
        self._check_output(conn)

    def _check_output(self, conn: Connection) -> None:
        transport = conn.transport
        if not conn.closed and len(transport.out) > self.config.MAX_OUTPUT_BYTES:
            # The client sends but does not read: stop buffering for it.
            log.warning(
                "output_cap_exceeded",
                conn=conn.id,
                peer_pid=conn.peer.pid,
                unsent=len(transport.out),
                limit=self.config.MAX_OUTPUT_BYTES,
            )
            self.counters.dropped_replies += 1
            self.close(conn)

    def _lost(self, conn: Connection) -> None:
        """The client went away; what it was sent is lost with it."""
        self.counters.dropped_replies += 1
        log.info("client_gone_before_reply", conn=conn.id, peer_pid=conn.peer.pid)
        self.close(conn)

    def _update_interest(self, conn: Connection) -> None:
        config = self.config
        transport = conn.transport
        transport.want_reading(
            conn.admitted
            and not conn.held
            and not conn.closing
            and conn.pending < config.MAX_PENDING_PER_CONNECTION
            and len(transport.out) < config.MAX_OUTPUT_BYTES
        )

    # -- closing -----------------------------------------------------------------

    def finish_if_done(self, conn: Connection) -> None:
        """Close a connection that has nothing more to do.

        While draining, that includes one whose requests are all answered: a
        client's next request then finds it closed before anything was read,
        so a client can safely send it again, to the successor.
        """
        if conn.closed or not conn.idle:
            return
        served = self.draining and conn.requests and not conn.transport.framer.pending
        if conn.transport.eof or conn.closing or served:
            self.close(conn)

    def close(self, conn: Connection) -> None:
        """Close *conn* and forget it (idempotent)."""
        if conn.closed:
            return
        conn.transport.close()
        del self.conns[conn.id]
        events.connection_closed()
        self.admission.forget(conn)
        self._on_room()

    def sweep(self, now: float) -> None:
        """Close connections idle too long; refuse lines unfinished past REQUEST_TIMEOUT."""
        idle_limit = self.config.IDLE_TIMEOUT
        request_limit = self.config.REQUEST_TIMEOUT
        for conn in self:
            if conn.closing:
                continue
            if conn.partial_since is not None and now - conn.partial_since > request_limit:
                log.warning(
                    "request_timeout", conn=conn.id, peer_pid=conn.peer.pid, limit=request_limit
                )
                self.refuse(
                    conn,
                    protocol.REQUEST_TIMEOUT,
                    f"Request timeout: a request line stayed incomplete for {request_limit:g} s; "
                    "closing the connection",
                )
            elif conn.quiet and now - conn.transport.last_active > idle_limit:
                log.info("idle_connection_closed", conn=conn.id, peer_pid=conn.peer.pid)
                self.close(conn)

    def refuse_unstarted(self) -> int:
        """Answer every call not started yet with -32004 (drain deadline); return how many."""
        self.router.refusing = True
        for conn in self:
            self._handle_held(conn)
        waiting = self.pool.take_waiting()
        for job in waiting:
            self.job_done(job, self.router.refuse_waiting(job))
        for conn in self:
            conn.transport.flush()
        return len(waiting)
