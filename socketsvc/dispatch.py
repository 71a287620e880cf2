"""Request -> handler call -> encoded reply or JSON-RPC error. No sockets.

:meth:`Dispatcher.resolve` runs on the event loop (cheap: look-up and
parameter binding); :meth:`Dispatcher.execute` runs on a worker thread inside
:func:`socketsvc.lifecycle.request_scope`.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, replace
from typing import Any

from django.db import DatabaseError

from . import dberrors, lifecycle, protocol
from .protocol import JSONValue, Request, RPCError
from .registry import Method, Registry

_JSON_TYPES: dict[type, tuple[type, ...]] = {
    int: (int,),
    float: (int, float),
    str: (str,),
    bool: (bool,),
    list: (list,),
    dict: (dict,),
}

_JSON_NAMES: dict[type, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


@dataclass(frozen=True, slots=True)
class Call:
    """A request bound to its handler, ready for a worker."""

    request: Request
    method: Method
    bound: inspect.BoundArguments


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker produced: the encoded reply (None for a notification) and how it went."""

    reply: bytes | None
    error_code: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    # The handler's unexpected exception, for the log (never for the client).
    exception: BaseException | None = None
    db_connects: int = 0
    db_reconnects: int = 0


def _simple_types(annotation: Any) -> tuple[type, ...] | None:
    """Return the JSON types a simple annotation admits, or None to skip checking."""
    if annotation in _JSON_TYPES:
        return _JSON_TYPES[annotation]
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return (origin,)
    if origin in (typing.Union, types.UnionType):
        admitted: list[type] = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                admitted.append(type(None))
                continue
            simple = _simple_types(arg)
            if simple is None:
                return None
            admitted.extend(simple)
        return tuple(admitted)
    return None


def _param_types(func: Any) -> dict[str, tuple[type, ...]]:
    """Return, per parameter with a simple JSON-type annotation, the admitted types."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return {}
    checked: dict[str, tuple[type, ...]] = {}
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name not in hints:
            continue
        admitted = _simple_types(hints[name])
        if admitted is not None:
            checked[name] = admitted
    return checked


def _check_types(
    types_by_param: dict[str, tuple[type, ...]], bound: inspect.BoundArguments
) -> None:
    for name, value in bound.arguments.items():
        admitted = types_by_param.get(name)
        if admitted is None:
            continue
        is_bool = isinstance(value, bool)
        if not isinstance(value, admitted) or (is_bool and bool not in admitted):
            expected = " or ".join(sorted({_JSON_NAMES[t] for t in admitted}))
            raise RPCError(
                protocol.INVALID_PARAMS,
                f"Invalid params: parameter {name!r} must be {expected}, "
                f"not {_JSON_NAMES.get(type(value), type(value).__name__)}",
                {"parameter": name},
            )


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


class Dispatcher:
    """Turn requests into handler calls and their outcomes into replies."""

    def __init__(self, registry: Registry, check_idle_after: float = 1.0) -> None:
        self.registry = registry
        self.check_idle_after = check_idle_after
        # Per method name: the JSON types each simply-annotated parameter admits.
        self._param_types: dict[str, dict[str, tuple[type, ...]]] = {}

    def resolve(self, request: Request) -> Call:
        """Find the handler and bind params to its signature; raise RPCError if impossible."""
        method = self.registry.get(request.method)
        if method is None:
            raise RPCError(
                protocol.METHOD_NOT_FOUND,
                f"Method not found: {request.method!r}",
                {"method": request.method},
            )
        try:
            bound = method.signature.bind(*request.args, **request.kwargs)
        except TypeError as exc:
            raise RPCError(
                protocol.INVALID_PARAMS,
                f"Invalid params for {method.name}{method.signature}: {exc}",
            ) from None
        types_by_param = self._param_types.get(method.name)
        if types_by_param is None:
            types_by_param = self._param_types[method.name] = _param_types(method.func)
        _check_types(types_by_param, bound)
        return Call(request, method, bound)

    def execute(self, call: Call) -> Outcome:
        """Run the handler with the DB lifecycle around it; never raise."""
        request = call.request
        connects_before = lifecycle.thread_connects()
        try:
            with lifecycle.request_scope(self.check_idle_after):
                result = call.method.func(*call.bound.args, **call.bound.kwargs)
        except RPCError as exc:
            outcome = self._error(request, exc.code, exc.message, exc.data, type(exc).__name__)
        except (Exception, SystemExit) as exc:
            outcome = self._failure(request, exc)
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

    def refusal(self, request: Request, exc: RPCError) -> Outcome:
        """Return the outcome of a request answered without running its handler."""
        return self._error(request, exc.code, exc.message, exc.data, None)

    def _success(self, call: Call, result: JSONValue) -> Outcome:
        request = call.request
        if request.is_notification:
            return Outcome(None)
        try:
            return Outcome(protocol.encode(protocol.result_response(request.id, result)))
        except (TypeError, ValueError) as exc:
            return self._error(
                request,
                protocol.INTERNAL_ERROR,
                f"Internal error: the result of {call.method.name} is not JSON: {exc}",
                None,
                _error_type(exc),
            )

    def _failure(self, request: Request, exc: BaseException) -> Outcome:
        kind = _error_type(exc)
        data: dict[str, JSONValue] = {"type": kind, "message": str(exc)}
        if isinstance(exc, DatabaseError):
            db_code = dberrors.driver_code(exc)
            if db_code is not None:
                data["db_code"] = db_code
            if dberrors.is_connection_error(exc):
                return self._error(
                    request,
                    protocol.DATABASE_UNAVAILABLE,
                    f"Database unavailable: {exc}",
                    data,
                    kind,
                )
        outcome = self._error(request, protocol.HANDLER_ERROR, f"{kind}: {exc}", data, kind)
        return replace(outcome, exception=exc)

    @staticmethod
    def _error(
        request: Request, code: int, message: str, data: JSONValue, kind: str | None
    ) -> Outcome:
        reply = None
        if not request.is_notification:
            response = protocol.error_response(request.id, code, message, data)
            try:
                reply = protocol.encode(response)
            except (TypeError, ValueError):
                reply = protocol.encode(protocol.error_response(request.id, code, message))
        return Outcome(reply, code, kind, message)
