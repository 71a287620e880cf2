"""Who may talk to the daemon: the second gate after the socket's file permissions.

The kernel reports a Unix peer's credentials (``SO_PEERCRED``) as they were at
``connect()``. Only the uid and gid are trusted (a pid can be reused); the
peer's supplementary groups come from the group database for its uid.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, field


def socket_group(path: str) -> int | None:
    """Return the group owning the socket file at *path*, if it can be read."""
    try:
        return os.stat(path).st_gid
    except OSError:
        return None


@dataclass
class AccessPolicy:
    """Allow a peer whose uid is listed, or who belongs to a listed group."""

    uids: frozenset[int]
    gids: frozenset[int]
    _groups: dict[int, frozenset[int]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        allowed_uids: Iterable[int] | None,
        allowed_gids: Iterable[int] | None,
        socket_gid: int | None,
    ) -> AccessPolicy:
        """Apply the defaults: the daemon's own uid and root; the socket file's group."""
        uids = frozenset(allowed_uids) if allowed_uids is not None else frozenset({os.getuid(), 0})
        if allowed_gids is not None:
            gids = frozenset(allowed_gids)
        else:
            gids = frozenset() if socket_gid is None else frozenset({socket_gid})
        return cls(uids, gids)

    def groups_of(self, uid: int, gid: int) -> frozenset[int]:
        """Return the primary and supplementary groups of *uid* (cached)."""
        cached = self._groups.get(uid)
        if cached is None:
            try:
                name = pwd.getpwuid(uid).pw_name
                cached = frozenset(os.getgrouplist(name, gid))
            except (KeyError, OSError):
                cached = frozenset()
            self._groups[uid] = cached
        return cached | {gid}

    def allows(self, uid: int, gid: int) -> bool:
        """Return True if the peer may use the service."""
        if uid in self.uids:
            return True
        return bool(self.gids) and not self.gids.isdisjoint(self.groups_of(uid, gid))

    def describe(self) -> dict[str, list[str]]:
        """Return the allowed users and groups, by name where known, for rpc.status."""

        def user(uid: int) -> str:
            try:
                return f"{pwd.getpwuid(uid).pw_name}({uid})"
            except KeyError:
                return str(uid)

        def group(gid: int) -> str:
            try:
                return f"{grp.getgrgid(gid).gr_name}({gid})"
            except KeyError:
                return str(gid)

        return {
            "uids": [user(u) for u in sorted(self.uids)],
            "gids": [group(g) for g in sorted(self.gids)],
        }
