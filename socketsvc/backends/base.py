"""The generic vendor: what holds for every database Django supports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage
from django.db import DatabaseError, InterfaceError

if TYPE_CHECKING:
    from ..conf import Config

# Modules whose exceptions are database driver errors (their text may hold SQL
# and connection details).
_DRIVER_MODULES = ("MySQLdb", "pymysql", "psycopg", "psycopg2", "sqlite3", "oracledb", "_mysql")


def from_database_layer(exc: BaseException) -> bool:
    """Return True if *exc* is a Django database error or a driver's own exception."""
    if isinstance(exc, DatabaseError):
        return True
    module = type(exc).__module__ or ""
    return module.split(".", 1)[0] in _DRIVER_MODULES


class VendorOps:
    """Vendor knowledge with generic defaults; subclasses override what their server allows."""

    vendor = "generic"

    def driver_code(self, exc: BaseException) -> int | str | None:
        """Return the driver's error code for *exc*, if this vendor's driver raised it."""
        return None

    def is_connection_error(self, exc: BaseException) -> bool:
        """Return True if *exc* means the server cannot be reached or the link broke."""
        return isinstance(exc, InterfaceError)

    def closed_by_server(self, conn: Any) -> bool | None:
        """Tell without a round trip whether the server closed an idle connection.

        None when this cannot be told cheaply; the caller then pings.
        """
        return None

    def idle_session_timeout(self, conn: Any) -> int | None:
        """Return after how many idle seconds the server drops a session, if it does."""
        return None

    def check(self, alias: str, database: Mapping[str, Any], config: Config) -> list[CheckMessage]:
        """Return system-check messages about one ``DATABASES`` entry of this vendor."""
        return []


OPS = VendorOps()
