"""Who may talk to the daemon: the second gate after the socket's file permissions.

The kernel reports a Unix peer's credentials (``SO_PEERCRED``) as they were at
``connect()``. Only the uid and gid are trusted (a pid can be reused). A peer
is allowed when its uid is listed or its primary gid is an allowed group;
both are decided on the spot. Only a peer that might belong to an allowed
group through a supplementary group needs the group database, which may be
LDAP or SSSD and slow: that look-up runs on a thread of its own, never on the
event loop, and its answer is kept for a minute.
"""

from __future__ import annotations

import grp
import os
import pwd
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("socketsvc.access")

# How long a peer's supplementary groups are trusted before being looked up again.
GROUPS_TTL = 60.0


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name}({uid})"
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name}({gid})"
    except KeyError:
        return str(gid)


def supplementary_groups(uid: int, gid: int) -> frozenset[int]:
    """Return every group *uid* belongs to (blocking: asks the group database)."""
    try:
        name = pwd.getpwuid(uid).pw_name
        return frozenset(os.getgrouplist(name, gid))
    except (KeyError, OSError):
        return frozenset({gid})


@dataclass
class AccessPolicy:
    """Allow a peer whose uid is listed, or who belongs to a listed group."""

    uids: frozenset[int]
    gids: frozenset[int]
    description: dict[str, list[str]] = field(default_factory=dict)
    _groups: dict[int, tuple[float, frozenset[int]]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        allowed_uids: Iterable[int] | None,
        allowed_gids: Iterable[int] | None,
        socket_gid: int | None,
    ) -> AccessPolicy:
        """Apply the defaults (the daemon's own uid and root; the socket file's group).

        Runs at startup and reload, where naming the ids for ``rpc.status`` may block.
        """
        uids = frozenset(allowed_uids) if allowed_uids is not None else frozenset({os.getuid(), 0})
        if allowed_gids is not None:
            gids = frozenset(allowed_gids)
        else:
            gids = frozenset() if socket_gid is None else frozenset({socket_gid})
        description = {
            "uids": [_user(uid) for uid in sorted(uids)],
            "gids": [_group(gid) for gid in sorted(gids)],
        }
        return cls(uids, gids, description)

    def verdict(self, uid: int, gid: int, now: float | None = None) -> bool | None:
        """Return whether the peer may connect, or None if its groups must be looked up first."""
        if uid in self.uids or gid in self.gids:
            return True
        if not self.gids:
            return False
        known = self._groups.get(uid)
        if known is None or (now if now is not None else time.monotonic()) > known[0]:
            return None
        return not self.gids.isdisjoint(known[1])

    def learn(self, uid: int, groups: frozenset[int]) -> None:
        """Remember *uid*'s groups for a while (loop thread)."""
        self._groups[uid] = (time.monotonic() + GROUPS_TTL, groups)


class GroupLookups:
    """Look up peers' groups on a thread of its own; hand each answer back to the loop."""

    def __init__(self, hand_back: Callable[..., None]) -> None:
        self._hand_back = hand_back
        self._requests: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._waiting: dict[int, list[Callable[[frozenset[int]], None]]] = {}
        self._thread: threading.Thread | None = None

    def request(self, uid: int, gid: int, callback: Callable[[frozenset[int]], None]) -> None:
        """Call ``callback(groups)`` on the loop once *uid*'s groups are known (loop thread)."""
        waiting = self._waiting.get(uid)
        if waiting is not None:
            waiting.append(callback)
            return
        self._waiting[uid] = [callback]
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="socketsvc-group-lookups", daemon=True
            )
            self._thread.start()
        self._requests.put((uid, gid))

    def _deliver(self, uid: int, groups: frozenset[int]) -> None:
        for callback in self._waiting.pop(uid, []):
            callback(groups)

    def _run(self) -> None:
        while (item := self._requests.get()) is not None:
            uid, gid = item
            started = time.monotonic()
            groups = supplementary_groups(uid, gid)
            took = time.monotonic() - started
            if took > 1.0:
                log.warning("slow_group_lookup", peer_uid=uid, seconds=round(took, 3))
            self._hand_back(self._deliver, uid, groups)

    def stop(self) -> None:
        """Let the look-up thread finish."""
        if self._thread is not None:
            self._requests.put(None)
