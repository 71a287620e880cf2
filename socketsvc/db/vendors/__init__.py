"""What socketsvc knows about each database vendor, one module per vendor.

Django keeps vendor code in ``django/db/backends/<vendor>/``; socketsvc does
the same for the little it adds on top: which errors mean "the server cannot
be reached", how to tell cheaply whether an idle connection is still alive,
and how long the server keeps an idle session. :func:`ops_for` picks the
module for a connection; vendors without one get the generic behaviour.
"""

from __future__ import annotations

from socketsvc.db.vendors import base, mysql, postgresql, sqlite
from socketsvc.db.vendors.base import (
    VendorOps,
    is_connect_failure,
    mark_connect_failure,
    open_marked,
)

_BY_VENDOR: dict[str, VendorOps] = {
    "mysql": mysql.OPS,
    "postgresql": postgresql.OPS,
    "sqlite": sqlite.OPS,
    "sqlite3": sqlite.OPS,  # the last part of the ENGINE's path
}


def ops_for(vendor: str) -> VendorOps:
    """Return the operations for a connection's ``vendor`` (or an ENGINE's last part)."""
    return _BY_VENDOR.get(vendor, base.OPS)


_BY_DRIVER: dict[str, VendorOps] = {
    "MySQLdb": mysql.OPS,
    "_mysql": mysql.OPS,
    "psycopg": postgresql.OPS,
    "psycopg2": postgresql.OPS,
    "psycopg_pool": postgresql.OPS,
    "sqlite3": sqlite.OPS,
}


def ops_for_exception(exc: BaseException) -> VendorOps:
    """Return the operations of the driver that raised *exc* (Django keeps it as the cause)."""
    for candidate in (exc, exc.__cause__):
        if candidate is None:
            continue
        module = (type(candidate).__module__ or "").split(".", 1)[0]
        if module in _BY_DRIVER:
            return _BY_DRIVER[module]
    return base.OPS


def driver_code(exc: BaseException) -> int | str | None:
    """Return the driver's error code behind *exc* (MySQL number or SQLSTATE), if any."""
    return ops_for_exception(exc).driver_code(exc)


def is_connection_error(exc: BaseException) -> bool:
    """Return True if *exc* says the database could not be reached or the link broke."""
    return ops_for_exception(exc).is_connection_error(exc)


def is_conflict(exc: BaseException) -> bool:
    """Return True if *exc* says the transaction lost a race (deadlock, lock wait timeout,
    serialization failure, SQLite's busy database): rolled back, worth trying again."""
    return ops_for_exception(exc).is_conflict(exc)


def misconfiguration(exc: BaseException) -> str | None:
    """Return what to fix when *exc* says the database settings are wrong, else None."""
    return ops_for_exception(exc).misconfiguration(exc)


def is_database_error(exc: BaseException) -> bool:
    """Return True if *exc*, or an exception it was raised from, came from the database layer.

    Their text can carry SQL, host names and user names, so it is never sent to a client.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if base.from_database_layer(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def describe_code(exc: BaseException) -> str:
    """Return ``"MySQL error 2006"`` or ``"SQLSTATE 08006"`` for *exc*, or ``""``."""
    code = driver_code(exc)
    if isinstance(code, int):
        return f"MySQL error {code}"
    if isinstance(code, str):
        return f"SQLSTATE {code}"
    return ""


__all__ = [
    "VendorOps",
    "describe_code",
    "driver_code",
    "is_conflict",
    "is_connect_failure",
    "is_connection_error",
    "is_database_error",
    "mark_connect_failure",
    "misconfiguration",
    "open_marked",
    "ops_for",
    "ops_for_exception",
]
