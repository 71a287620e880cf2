"""The request lifecycle outside the daemon: ``request_scope`` for your own long-running loops.

It lives in :mod:`socketsvc.db.lifecycle`; this is its public path.
"""

from socketsvc.db.lifecycle import close_thread_connections, refresh_connections, request_scope

__all__ = ["close_thread_connections", "refresh_connections", "request_scope"]
