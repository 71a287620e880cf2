"""socketsvc: a long-running Django background service on a Unix socket.

Handlers are plain functions registered with :func:`handler`; clients reach
them with :func:`call` and :func:`notify`; ``manage.py runsocketservice`` serves
them with Django's request-cycle DB hygiene around every call.
"""

from socketsvc.client import (
    AccessDenied,
    CallTimeout,
    DatabaseUnavailable,
    HandlerError,
    InvalidParams,
    MethodNotFound,
    ProtocolError,
    RemoteError,
    ServiceBusy,
    ServiceUnavailable,
    SocketServiceError,
    call,
    call_with,
    notify,
    notify_with,
)
from socketsvc.methods.registry import handler
from socketsvc.protocol import RPCError

__version__ = "0.2.0"

__all__ = [
    "AccessDenied",
    "CallTimeout",
    "DatabaseUnavailable",
    "HandlerError",
    "InvalidParams",
    "MethodNotFound",
    "ProtocolError",
    "RPCError",
    "RemoteError",
    "ServiceBusy",
    "ServiceUnavailable",
    "SocketServiceError",
    "__version__",
    "call",
    "call_with",
    "handler",
    "notify",
    "notify_with",
]
