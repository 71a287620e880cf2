"""What the kernel says about a process: is it alive, how much memory does it hold."""

from __future__ import annotations

import os


def rss_kib(pid: int | str = "self") -> int:
    """Return a process's resident memory in KiB (0 if unknown)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return 0


def pid_alive(pid: int) -> bool:
    """Return True if a process *pid* exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
