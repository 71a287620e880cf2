"""Who may talk to the daemon: the second gate after the socket's file permissions.

The kernel reports a Unix peer's credentials as they were at ``connect()``:
its uid and primary gid (``SO_PEERCRED``) and its supplementary groups
(``SO_PEERGROUPS``, Linux 4.13+). Only these are trusted (a pid can be
reused). A peer is allowed when its uid is listed, or its primary gid or one
of its supplementary groups is an allowed group. The kernel's list is the
process's real one: a group given by systemd's ``SupplementaryGroups=`` or by
``setgroups()`` counts, though ``/etc/group`` does not list it, and nothing is
looked up in a group database (which may be LDAP or SSSD, and slow).
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


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


@dataclass
class AccessPolicy:
    """Allow a peer whose uid is listed, or who belongs to a listed group."""

    uids: frozenset[int]
    gids: frozenset[int]
    description: dict[str, list[str]] = field(default_factory=dict)

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

    def allows(self, uid: int, gid: int, groups: Callable[[], frozenset[int]]) -> bool:
        """Return whether the peer may connect; *groups* gives its supplementary groups, asked
        only when its uid and primary gid do not decide."""
        if uid in self.uids or gid in self.gids:
            return True
        return bool(self.gids) and not self.gids.isdisjoint(groups())
