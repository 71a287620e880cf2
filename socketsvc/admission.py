"""Who gets a connection slot: the access policy, the caps, and eviction of idle connections.

At ``MAX_CONNECTIONS``, or at ``MAX_CONNECTIONS_PER_UID`` for the peer's
uid, the longest-idle connection with nothing in flight and nothing buffered
(nothing read but unanswered, nothing unread in the kernel, nothing unsent)
is closed to make room, the way nginx treats idle keep-alive connections. Its
client never loses a request by it: a connection closed before its request
was read makes ``call()`` send that request again on a new one. A connection
is refused only when every connection that counts against the cap is busy.

The admitted connections are kept in order of last activity (an
``OrderedDict`` moved on each request, O(1)), overall and per uid, so finding
the longest-idle one takes no scan of busy ones except those it must skip.
"""

from __future__ import annotations

from collections import OrderedDict

from .connection import Connection


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
        """Return the longest-idle evictable connection (of *uid*, or of anyone), if any."""
        candidates = self._recent if uid is None else self._by_uid.get(uid)
        for conn in (candidates or {}).values():
            if conn.quiet and not conn.closing and not conn.transport.has_unread_data():
                return conn
        return None
