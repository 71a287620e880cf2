"""Binding JSON-RPC params to a handler's signature, prepared once when the handler registers.

Simple annotations (``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``,
their generic forms, unions and ``X | None``) are checked; any other
annotation is left to the handler. An annotation that cannot be evaluated is a
registration error, so a handler with a typo in its signature fails at startup
instead of at its first call.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from socketsvc import protocol
from socketsvc.protocol import JSONValue, RPCError

_JSON_TYPES: dict[Any, tuple[type, ...]] = {
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


class BadSignature(Exception):
    """A handler's signature cannot be prepared; the message says why."""


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


def _expected(admitted: tuple[type, ...]) -> str:
    return " or ".join(sorted({_JSON_NAMES[t] for t in admitted}))


@dataclass(frozen=True, slots=True)
class Binder:
    """A handler's signature, and the JSON types its simply annotated parameters admit."""

    name: str
    signature: inspect.Signature
    checked: tuple[tuple[str, tuple[type, ...], str], ...]

    @classmethod
    def prepare(cls, name: str, func: Callable[..., Any]) -> Binder:
        """Evaluate *func*'s annotations once; raise BadSignature if they cannot be."""
        try:
            signature = inspect.signature(func, eval_str=True)
        except (NameError, SyntaxError, TypeError, AttributeError) as exc:
            raise BadSignature(
                f"handler {name!r}: its annotations cannot be evaluated "
                f"({type(exc).__name__}: {exc}); import the names they use at module level"
            ) from None
        except ValueError as exc:
            raise BadSignature(f"handler {name!r}: no signature ({exc})") from None
        checked = []
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            admitted = _simple_types(param.annotation)
            if admitted is not None:
                checked.append((param.name, admitted, _expected(admitted)))
        return cls(name, signature, tuple(checked))

    def _unknown_names(self, params: object) -> list[str]:
        """Return the names in a params object the handler has no parameter for."""
        parameters = self.signature.parameters
        if not isinstance(params, dict) or any(
            p.kind is p.VAR_KEYWORD for p in parameters.values()
        ):
            return []
        return [name for name in params if name not in parameters]

    def bind(self, params: list[JSONValue] | dict[str, JSONValue] | None) -> inspect.BoundArguments:
        """Bind *params*; raise RPCError(INVALID_PARAMS) naming what does not fit."""
        try:
            if isinstance(params, dict):
                bound = self.signature.bind(**params)
            else:
                bound = self.signature.bind(*(params or ()))
        except TypeError as exc:
            problem = str(exc)
            unknown = self._unknown_names(params)
            if unknown and "unexpected keyword" not in problem:
                problem += f"; and it has no parameter {', '.join(map(repr, unknown))}"
            raise RPCError(
                protocol.INVALID_PARAMS,
                f"Invalid params for {self.name}{self.signature}: {problem}",
            ) from None
        arguments = bound.arguments
        for param, admitted, expected in self.checked:
            if param not in arguments:
                continue
            value = arguments[param]
            is_bool = isinstance(value, bool)
            if not isinstance(value, admitted) or (is_bool and bool not in admitted):
                got = _JSON_NAMES.get(type(value), type(value).__name__)
                raise RPCError(
                    protocol.INVALID_PARAMS,
                    f"Invalid params: parameter {param!r} must be {expected}, not {got}",
                    {"parameter": param},
                )
        return bound
