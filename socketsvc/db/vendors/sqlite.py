"""SQLite: one writer at a time, so the daemon's threads must queue for the write lock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Warning
from django.db import OperationalError

from socketsvc.db.vendors.base import VendorOps

if TYPE_CHECKING:
    from socketsvc.conf import Config


class SQLiteOps(VendorOps):
    """The sqlite3 module."""

    vendor = "sqlite"

    def is_conflict(self, exc: BaseException) -> bool:
        """Return True when another connection held the write lock past the busy timeout."""
        return isinstance(exc, OperationalError) and "is locked" in str(exc)

    def check(self, alias: str, database: Mapping[str, Any], config: Config) -> list[CheckMessage]:
        """Warn when transactions start DEFERRED: concurrent writers then fail at once.

        A deferred transaction that read and then writes cannot wait for the
        lock another connection holds (that would deadlock), so SQLite fails it
        with "database is locked" at once, whatever the timeout. The daemon's
        handler, task and housekeeping threads write concurrently.
        """
        options = database.get("OPTIONS", {}) or {}
        mode = str(options.get("transaction_mode") or "DEFERRED").upper()
        if mode != "DEFERRED":
            return []
        return [
            Warning(
                f"DATABASES[{alias!r}] is SQLite with deferred transactions: the daemon's "
                "threads write concurrently, and a deferred transaction that must wait for "
                "the write lock fails at once with 'database is locked'.",
                hint='Set OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": 20} (and '
                '"init_command": "PRAGMA journal_mode=WAL", so readers never wait).',
                id="socketsvc.W006",
            )
        ]


OPS = SQLiteOps()
