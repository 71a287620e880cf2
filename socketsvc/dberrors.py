"""Classify database exceptions: which ones mean "the server cannot be reached"."""

from __future__ import annotations

from django.db import DatabaseError, InterfaceError

# MySQL/MariaDB client and server codes that mean the connection is gone or
# could not be made: server gone away (2006), lost during query (2013, 2055),
# can't connect by socket/TCP/host (2002, 2003, 2005), commands out of sync
# (2014), inactivity timeout (4031), too many connections (1040), connection
# killed (1927) and server shutdown (1053). 1317 (query interrupted) is absent
# on purpose: the connection survives it.
MYSQL_CONNECTION_ERRORS = frozenset(
    {1040, 1053, 1927, 2002, 2003, 2005, 2006, 2013, 2014, 2055, 4031}
)


def driver_code(exc: BaseException) -> int | None:
    """Return the driver's numeric error code behind a Django DB exception, if any."""
    for candidate in (exc, exc.__cause__):
        if candidate is None:
            continue
        args = getattr(candidate, "args", ())
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            return args[0]
    return None


def is_connection_error(exc: BaseException) -> bool:
    """Return True if *exc* says the database could not be reached or the link broke."""
    if not isinstance(exc, DatabaseError):
        return False
    if isinstance(exc, InterfaceError):
        return True
    return driver_code(exc) in MYSQL_CONNECTION_ERRORS
