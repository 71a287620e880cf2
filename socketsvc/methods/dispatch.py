"""Request -> handler call -> encoded reply or JSON-RPC error. No sockets.

:meth:`Dispatcher.resolve` runs on the event loop (cheap: look-up and the
binding prepared at registration); :meth:`Dispatcher.execute` runs on a worker
thread inside :func:`socketsvc.db.lifecycle.request_scope` and never raises,
whatever the handler does or returns.

What a client is told of a failure:

* a handler's own ``RPCError``: its code, message and data, as the handler chose;
* an error from the database layer: the exception type, the driver's code
  (MySQL error number or SQLSTATE) and the request id, never the driver's text,
  which can carry SQL, host and user names; the full text goes to the log line
  of that request id;
* any other exception: its type and message (the handler's own words);
* a result that cannot be encoded: ``-32603``.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, replace

from asgiref.sync import async_to_sync

from socketsvc import protocol
from socketsvc.db import lifecycle, vendors
from socketsvc.db.liveness import ConnectionLostInTransaction
from socketsvc.methods.registry import Method, Registry
from socketsvc.protocol import JSONValue, Request, RPCError

# A handler's exception message is cut to this many characters for the client.
MAX_ERROR_TEXT = 1000


@dataclass(frozen=True, slots=True)
class Call:
    """A request bound to its handler, ready for a worker."""

    request: Request
    method: Method
    bound: inspect.BoundArguments


@dataclass(frozen=True, slots=True)
class Outcome:
    """What running a call produced: the encoded reply (None for a notification) and how it went."""

    reply: bytes | None
    error_code: int | None = None
    error_type: str | None = None
    # What the log says of the error: the full text, which the client may not see.
    error_message: str | None = None
    # The handler's unexpected exception, for the log (never for the client).
    exception: BaseException | None = None
    db_connects: int = 0
    db_reconnects: int = 0


def error_type(exc: BaseException) -> str:
    """Return the dotted name of *exc*'s class (builtins by bare name)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose text cannot be shown>"


def error_outcome(
    request: Request,
    code: int,
    message: str,
    data: JSONValue = None,
    kind: str | None = None,
    *,
    logged: str | None = None,
) -> Outcome:
    """Return the outcome of an error reply (none for a notification)."""
    reply = None
    if not request.is_notification:
        try:
            reply = protocol.encode(protocol.error_response(request.id, code, message, data))
        except Exception:
            reply = protocol.encode(protocol.error_response(request.id, code, message))
    return Outcome(reply, code, kind, logged if logged is not None else message)


def _log_line(request_id: int) -> dict[str, JSONValue]:
    """Return the error data that finds the request's log line: ids count per process."""
    return {"request_id": request_id, "pid": os.getpid()}


def internal_error(request: Request, request_id: int) -> Outcome:
    """Return an Internal error for a call whose worker failed around it (no text from it)."""
    return error_outcome(
        request,
        protocol.INTERNAL_ERROR,
        f"Internal error: the call failed inside the service; see its log (request {request_id})",
        _log_line(request_id),
    )


class Dispatcher:
    """Turn requests into handler calls and their outcomes into replies."""

    def __init__(self, registry: Registry, check_idle_after: float = 1.0) -> None:
        self.registry = registry
        self.check_idle_after = check_idle_after

    def resolve(self, request: Request) -> Call:
        """Find the handler and bind params to its signature; raise RPCError if impossible."""
        method = self.registry.get(request.method)
        if method is None:
            raise RPCError(
                protocol.METHOD_NOT_FOUND,
                f"Method not found: {request.method!r}",
                {"method": request.method},
            )
        return Call(request, method, method.binder.bind(request.params))

    def execute(self, call: Call, request_id: int) -> Outcome:
        """Run the handler with the DB lifecycle around it; never raise."""
        request = call.request
        connects_before = lifecycle.thread_connects()
        try:
            with lifecycle.request_scope(self.check_idle_after):
                func = call.method.func
                if call.method.asynchronous:
                    # The ORM's async calls run in this thread (thread_sensitive), on the
                    # connections the lifecycle checks and closes around the call.
                    func = async_to_sync(func)
                result = func(*call.bound.args, **call.bound.kwargs)
        except RPCError as exc:
            outcome = error_outcome(request, exc.code, exc.message, exc.data, type(exc).__name__)
        except BaseException as exc:
            outcome = self._failure(request, exc, request_id)
        else:
            outcome = self._success(call, result)
        connects_after = lifecycle.thread_connects()
        if connects_after == connects_before:
            return outcome
        return replace(
            outcome,
            db_connects=connects_after[0] - connects_before[0],
            db_reconnects=connects_after[1] - connects_before[1],
        )

    @staticmethod
    def refusal(request: Request, exc: RPCError) -> Outcome:
        """Return the outcome of a request answered without running its handler."""
        return error_outcome(request, exc.code, exc.message, exc.data)

    @staticmethod
    def _success(call: Call, result: JSONValue) -> Outcome:
        request = call.request
        if request.is_notification:
            return Outcome(None)
        try:
            return Outcome(protocol.encode(protocol.result_response(request.id, result)))
        except Exception as exc:  # TypeError, ValueError, RecursionError (nested too deep)
            kind = error_type(exc)
            return error_outcome(
                request,
                protocol.INTERNAL_ERROR,
                f"Internal error: the result of {call.method.name} is not JSON "
                f"({kind}: {_shorten(_safe_str(exc))})",
                None,
                kind,
            )

    @staticmethod
    def _failure(request: Request, exc: BaseException, request_id: int) -> Outcome:
        kind = error_type(exc)
        text = _safe_str(exc)
        if isinstance(exc, ConnectionLostInTransaction):
            message = f"Database unavailable: {text}"
            data: dict[str, JSONValue] = {"type": kind, "message": text, **_log_line(request_id)}
            return error_outcome(request, protocol.DATABASE_UNAVAILABLE, message, data, kind)
        if vendors.is_database_error(exc):
            code = vendors.driver_code(exc)
            described = vendors.describe_code(exc)
            about = f" ({described})" if described else ""
            data = {"type": kind, **_log_line(request_id)}
            if code is not None:
                data["db_code"] = code
            problem = vendors.misconfiguration(exc)
            if problem is not None or vendors.is_connection_error(exc):
                if problem is not None:
                    summary = f"the service cannot use its database{about}: {problem}"
                else:
                    summary = f"the service could not reach its database{about}"
                data["message"] = summary
                return error_outcome(
                    request,
                    protocol.DATABASE_UNAVAILABLE,
                    f"Database unavailable: {summary}; see the service log, request {request_id}",
                    data,
                    kind,
                    logged=text,
                )
            summary = f"a database error{about}; see the service log, request {request_id}"
            data["message"] = summary
            outcome = error_outcome(
                request,
                protocol.HANDLER_ERROR,
                f"{kind}: {summary}",
                data,
                kind,
                logged=f"{kind}: {text}",
            )
            return replace(outcome, exception=exc)
        shown = _shorten(text)
        data = {"type": kind, "message": shown, **_log_line(request_id)}
        outcome = error_outcome(
            request,
            protocol.HANDLER_ERROR,
            f"{kind}: {shown}",
            data,
            kind,
            logged=f"{kind}: {text}",
        )
        return replace(outcome, exception=exc)
