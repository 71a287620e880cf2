"""A blocking client: :func:`call` waits for the result, :func:`notify` does not.

Every failure is a typed exception, so a web view can tell the user what
happened::

    from socketsvc import call, ServiceUnavailable, CallTimeout, RemoteError

    try:
        summary = call("shop.restock", sku="A-1", quantity=5, timeout=5)
    except ServiceUnavailable: ...     # not running, refused, no permission
    except CallTimeout: ...            # no reply within the timeout
    except RemoteError as exc: ...     # exc.code, exc.message, exc.data
"""

from __future__ import annotations

import itertools
import json
import os
import socket as _socket
import threading
import time
from collections.abc import Callable
from typing import Any

from socketsvc import protocol
from socketsvc.client.wire import Unanswered, connect, read_reply, send
from socketsvc.errors import (
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
)
from socketsvc.observe import tracing
from socketsvc.protocol import JSONValue

__all__ = [
    "AccessDenied",
    "CallTimeout",
    "DatabaseUnavailable",
    "HandlerError",
    "InvalidParams",
    "MethodNotFound",
    "ProtocolError",
    "RemoteError",
    "ServiceBusy",
    "ServiceUnavailable",
    "SocketServiceError",
    "call",
    "call_with",
    "close_connections",
    "notify",
    "notify_with",
]

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _resolve(socket: str | os.PathLike[str] | None, timeout: float | None) -> tuple[str, float]:
    """Return the socket path and timeout, reading SOCKETSVC (once) for what was not given."""
    if socket is not None and timeout is not None:
        return os.fspath(socket), timeout
    from socketsvc.conf import get_config

    config = get_config()
    return (
        os.fspath(socket) if socket is not None else config.SOCKET,
        timeout if timeout is not None else config.CALL_TIMEOUT,
    )


def default_timeout() -> float:
    """Return ``SOCKETSVC['CALL_TIMEOUT']``."""
    from socketsvc.conf import get_config

    return get_config().CALL_TIMEOUT


def _next_id() -> int:
    with _ids_lock:
        return next(_ids)


_pool = threading.local()

# In-process mode (socketsvc.testing): encoded request -> encoded reply (None for a
# notification), in place of the socket.
Exchange = Callable[[bytes], "bytes | None"]
_in_process: list[Exchange] = []


def serve_in_process(exchange: Exchange | None) -> None:
    """Send every call and notification of this process to *exchange* (None: the socket)."""
    _in_process[:] = [] if exchange is None else [exchange]


def _validated(raw: bytes, request_id: int, path: str) -> dict[str, JSONValue]:
    """Return the reply object if it answers *request_id* (or refuses the connection)."""
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"reply from {path} is not JSON: {exc}") from None
    if not isinstance(reply, dict):
        raise ProtocolError(f"unexpected reply from {path}: {raw[:200]!r}")
    # An error with id null answers the connection itself: refused on accept.
    refused = reply.get("id") is None and isinstance(reply.get("error"), dict)
    if reply.get("id") != request_id and not refused:
        raise ProtocolError(f"unexpected reply from {path}: {raw[:200]!r}")
    if "error" not in reply and "result" not in reply:
        raise ProtocolError(f"reply from {path} has neither result nor error")
    return reply


def _exchange(
    path: str, data: bytes, request_id: int, deadline: float, timeout: float
) -> dict[str, JSONValue]:
    """Send one request and return its validated reply, on this thread's kept connection.

    A kept connection the service has closed meanwhile (idle timeout, restart,
    eviction) fails the send, or is reset with the request unread: the service
    never read it, so it is sent again, once, on a new connection. One that ends
    after the service read the request (its worker process died running it) is
    ServiceUnavailable ("lost"): it is never sent twice. The connection is kept
    for the next call only after a reply that answers this request: a refusal,
    a reply to another id or anything unreadable closes it.
    """
    kept: dict[str, tuple[int, _socket.socket]] = _pool.__dict__.setdefault("sockets", {})
    pid, sock = kept.pop(path, (0, None))
    if sock is not None and pid != os.getpid():
        sock.close()  # inherited across fork: the parent's, not ours to use
        sock = None
    for fresh in (sock is None, True):
        if sock is None:
            sock = connect(path, deadline)
        try:
            send(sock, data, path, deadline)
            reply = _validated(read_reply(sock, path, deadline, timeout), request_id, path)
        except Unanswered as exc:
            sock.close()
            sock = None
            if fresh:
                raise ServiceUnavailable(str(exc), path, "lost") from None
            continue
        except BaseException:
            sock.close()
            raise
        if reply.get("id") == request_id:
            kept[path] = (os.getpid(), sock)
        else:
            sock.close()
        return reply
    raise AssertionError("unreachable")


def close_connections() -> None:
    """Close this thread's kept connections (they are also closed when the thread ends)."""
    kept: dict[str, tuple[int, _socket.socket]] = _pool.__dict__.pop("sockets", {})
    for pid, sock in kept.values():
        if pid == os.getpid():
            sock.close()


Params = list[Any] | dict[str, Any] | None


def _build(method: str, params: Params) -> dict[str, Any]:
    if params is not None and not isinstance(params, list | dict):
        raise TypeError(f"params must be a list or a dict, not {type(params).__name__}")
    message: dict[str, Any] = {"jsonrpc": protocol.VERSION, "method": method}
    if params:
        message["params"] = params
    trace = tracing.outgoing()
    if trace is not None:
        message.update(trace)  # the daemon's span continues the caller's trace
    return message


def _encode(message: dict[str, Any]) -> bytes:
    try:
        return protocol.encode(message)
    except (TypeError, ValueError) as exc:
        found = protocol.find_not_json_argument(message.get("params", []), "params")
        where = f": {found[0]} is {found[1]}" if found else f" ({exc})"
        raise TypeError(
            f"the params of {message['method']} must be JSON{where}; "
            "send str, int, float, bool, None, lists and dicts with str keys"
        ) from None


def _params(args: tuple[Any, ...], named: dict[str, Any]) -> Params:
    if args and named:
        raise TypeError("JSON-RPC params are either positional or named, not both")
    return list(args) if args else named


def call(
    method: str,
    *args: Any,
    timeout: float | None = None,
    socket: str | os.PathLike[str] | None = None,
    **params: Any,
) -> Any:
    """Call *method* with positional *args* or named *params*; return its result.

    Raises ServiceUnavailable, CallTimeout, RemoteError (or a subclass) or
    ProtocolError. *timeout* bounds the whole call, connect included. For a
    param named ``timeout`` or ``socket``, use :func:`call_with`.
    """
    return call_with(method, _params(args, params), timeout=timeout, socket=socket)


def call_with(
    method: str,
    params: Params = None,
    *,
    timeout: float | None = None,
    socket: str | os.PathLike[str] | None = None,
) -> Any:
    """Call *method* with a params array or object (any names, ``timeout`` and ``socket`` too)."""
    request_id = _next_id()
    data = _encode({**_build(method, params), "id": request_id})
    if _in_process:
        reply = _validated(_in_process[0](data) or b"", request_id, "(in process)")
    else:
        path, timeout = _resolve(socket, timeout)
        deadline = time.monotonic() + timeout
        reply = _exchange(path, data, request_id, deadline, timeout)
    if "error" in reply:
        error = reply["error"]
        exc = RemoteError.from_error(error if isinstance(error, dict) else {})
        if isinstance(exc, MethodNotFound) and not _in_process:
            hint = _defined_here(method)
            if hint is not None:
                exc = MethodNotFound(exc.code, f"{exc.message}; {hint}", exc.data)
        raise exc
    return reply["result"]


def _defined_here(method: str) -> str | None:
    """Say so when *method* is a handler in this process's code that the daemon lacks."""
    try:
        from django.apps import apps

        if not apps.ready:
            return None
        from socketsvc.methods.registry import autodiscover

        found = autodiscover().get(method)
    except Exception:
        return None  # only a hint: whatever fails here, the error stays as it was
    if found is None:
        return None
    where = f"{found.func.__module__}.{found.func.__qualname__}"
    return (
        f"it is defined in this code ({where}) but not in the running daemon, which finds "
        "its handlers when it starts: restart it (in development, runsocketservice --reload "
        "restarts it when the code changes)"
    )


def notify(
    method: str,
    *args: Any,
    timeout: float | None = None,
    socket: str | os.PathLike[str] | None = None,
    **params: Any,
) -> None:
    """Send *method* as a notification: delivered to the service, no result, no reply.

    Raises ServiceUnavailable or CallTimeout if it could not be delivered. For
    a param named ``timeout`` or ``socket``, use :func:`notify_with`.
    """
    notify_with(method, _params(args, params), timeout=timeout, socket=socket)


def notify_with(
    method: str,
    params: Params = None,
    *,
    timeout: float | None = None,
    socket: str | os.PathLike[str] | None = None,
) -> None:
    """Send a notification with a params array or object (any names)."""
    data = _encode(_build(method, params))
    if _in_process:
        _in_process[0](data)
        return
    path, timeout = _resolve(socket, timeout)
    deadline = time.monotonic() + timeout
    sock = connect(path, deadline)
    try:
        send(sock, data, path, deadline)
    except Unanswered as exc:
        raise ServiceUnavailable(str(exc), path, "lost") from None
    finally:
        sock.close()
