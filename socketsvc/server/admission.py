"""Who gets a connection slot: the access policy, the caps, and eviction of idle connections.

At ``MAX_CONNECTIONS``, or at ``MAX_CONNECTIONS_PER_UID`` for the peer's
uid, the longest-idle connection with nothing in flight and nothing buffered
(nothing read but unanswered, nothing unread in the kernel, nothing unsent)
is closed to make room, the way nginx treats idle keep-alive connections. Its
client never loses a request by it: a connection closed before its request
was read makes ``call()`` send that request again on a new one. A connection
is refused only when every connection that counts against the cap is busy.

The admitted connections are kept in order of last activity as the loop
records it (an ``OrderedDict`` moved on each request and reply, O(1)),
overall and per uid, so finding the longest-idle one scans no more than the
busy ones it must skip and a few idle ones (:data:`LOOK_AHEAD`).
"""

from __future__ import annotations

from collections import OrderedDict

from socketsvc.server.connection import Connection

# How many evictable connections, oldest first by bookkeeping, idlest() compares.
LOOK_AHEAD = 8


class Admission:
    """The admitted connections by last activity, overall and per uid."""

    def __init__(self) -> None:
        self._recent: OrderedDict[int, Connection] = OrderedDict()
        self._by_uid: dict[int, OrderedDict[int, Connection]] = {}

    def __len__(self) -> int:
        return len(self._recent)

    def of_uid(self, uid: int) -> int:
        """Return how many admitted connections *uid* holds."""
        held = self._by_uid.get(uid)
        return len(held) if held is not None else 0

    def admit(self, conn: Connection) -> None:
        """Count *conn* from now on."""
        conn.admitted = True
        self._recent[conn.id] = conn
        self._by_uid.setdefault(conn.peer.uid, OrderedDict())[conn.id] = conn

    def touch(self, conn: Connection) -> None:
        """Record activity on *conn* (it becomes the most recently active)."""
        if conn.admitted:
            self._recent.move_to_end(conn.id)
            self._by_uid[conn.peer.uid].move_to_end(conn.id)

    def forget(self, conn: Connection) -> None:
        """Stop counting *conn* (it closed)."""
        if not conn.admitted:
            return
        conn.admitted = False
        del self._recent[conn.id]
        held = self._by_uid[conn.peer.uid]
        del held[conn.id]
        if not held:
            del self._by_uid[conn.peer.uid]

    def idlest(self, uid: int | None = None) -> Connection | None:
        """Return the longest-idle evictable connection (of *uid*, or of anyone), if any.

        The order is that of the loop's bookkeeping, which trails a reply a worker
        sent itself by a moment, so another connection may have been served in
        between: of the first few evictable ones in that order, the one last
        active earliest (its transport's last read or send) is taken.
        """
        candidates = self._recent if uid is None else self._by_uid.get(uid)
        idlest: Connection | None = None
        looked = 0
        for conn in (candidates or {}).values():
            if conn.quiet and not conn.closing and not conn.transport.has_unread_data():
                if idlest is None or conn.transport.last_active < idlest.transport.last_active:
                    idlest = conn
                looked += 1
                if looked == LOOK_AHEAD:
                    break
        return idlest
