"""Process-wide counters of what the database lifecycle did, for ``rpc.status``."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class LifecycleStats:
    """Process-wide counters, read by ``rpc.status``."""

    connects: int = 0
    reconnects: int = 0
    discarded: int = 0
    dead_connections_replaced: int = 0
    leaked_atomic_rolled_back: int = 0
    autocommit_restored: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def bump(self, field: str) -> None:
        """Increment one counter."""
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)

    def snapshot(self) -> dict[str, int]:
        """Return the counters as a dict."""
        with self._lock:
            return {
                "db_connects": self.connects,
                "db_reconnects": self.reconnects,
                "db_connections_discarded": self.discarded,
                "dead_connections_replaced": self.dead_connections_replaced,
                "leaked_atomic_rolled_back": self.leaked_atomic_rolled_back,
                "autocommit_restored": self.autocommit_restored,
            }


stats = LifecycleStats()
