"""socketsvc.methods.dispatch.Dispatcher.resolve: method look-up, param binding and type checks."""

from dataclasses import dataclass
from typing import Any, Optional

import pytest

from socketsvc.methods.dispatch import Call, Dispatcher
from socketsvc.methods.registry import Registry
from socketsvc.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, Request, RPCError


def restock(sku: str, quantity: int = 10) -> dict[str, Any]:
    """Typed like a real handler."""
    return {"sku": sku, "quantity": quantity}


def maybe(limit: int | None, ratio: Optional[float] = None) -> Any:  # noqa: UP045
    """Optional params, in both spellings."""
    return limit, ratio


def flags(enabled: bool, tags: list[str], extra: dict[str, Any]) -> Any:
    """Boolean and container params."""
    return enabled, tags, extra


def untyped(anything, other: Any = None):
    """No annotations to check."""
    return anything, other


def variadic(first: int, *rest: int, **options: Any) -> Any:
    """Variadic params."""
    return first, rest, options


def stringly(count: "int") -> int:
    """A string annotation, as with ``from __future__ import annotations``."""
    return count


@dataclass
class Scale:
    """A callable object; as a dataclass with eq=True it is unhashable."""

    factor: int

    def __call__(self, x: int) -> int:
        return x * self.factor


@pytest.fixture
def dispatcher() -> Dispatcher:
    reg = Registry()
    for func in (restock, maybe, flags, untyped, variadic, stringly):
        reg.add(func, f"t.{func.__name__}")
    return Dispatcher(reg)


def request(method: str, params: Any = None) -> Request:
    return Request(method, params, 1, False)


def invalid_params(dispatcher: Dispatcher, method: str, params: Any) -> RPCError:
    with pytest.raises(RPCError) as info:
        dispatcher.resolve(request(method, params))
    assert info.value.code == INVALID_PARAMS
    return info.value


def test_unknown_method_is_method_not_found(dispatcher):
    """A method that is not registered raises RPCError -32601 naming the method."""
    with pytest.raises(RPCError) as info:
        dispatcher.resolve(request("t.nope", [1]))
    assert info.value.code == METHOD_NOT_FOUND
    assert "'t.nope'" in info.value.message
    assert info.value.data == {"method": "t.nope"}


def test_builtin_rpc_names_are_not_in_a_fresh_registry(dispatcher):
    """resolve() only knows registered handlers: rpc.ping is answered elsewhere."""
    with pytest.raises(RPCError) as info:
        dispatcher.resolve(request("rpc.ping"))
    assert info.value.code == METHOD_NOT_FOUND


def test_positional_params_bind(dispatcher):
    """Positional params bind in order to the handler's parameters."""
    call = dispatcher.resolve(request("t.restock", ["A-1", 5]))
    assert isinstance(call, Call)
    assert call.method.func is restock
    assert call.bound.arguments == {"sku": "A-1", "quantity": 5}
    assert call.method.func(*call.bound.args, **call.bound.kwargs) == {"sku": "A-1", "quantity": 5}


def test_named_params_bind(dispatcher):
    """Named params bind by name, and defaults are left for the call."""
    call = dispatcher.resolve(request("t.restock", {"sku": "A-1"}))
    assert call.bound.arguments == {"sku": "A-1"}
    assert call.method.func(*call.bound.args, **call.bound.kwargs)["quantity"] == 10


def test_missing_param_is_invalid_params_naming_it(dispatcher):
    """A missing required param gives -32602 whose message names the parameter."""
    error = invalid_params(dispatcher, "t.restock", {"quantity": 3})
    assert "'sku'" in error.message
    assert "missing" in error.message
    assert "t.restock(sku: str, quantity: int = 10)" in error.message
    error = invalid_params(dispatcher, "t.restock", None)
    assert "'sku'" in error.message


def test_a_misspelt_name_is_named_beside_the_missing_one(dispatcher):
    """{"skuu": ...} for a handler that needs sku: -32602 names both the missing parameter
    and the one the handler does not have."""
    error = invalid_params(dispatcher, "t.restock", {"skuu": "A-1"})
    assert "missing a required argument: 'sku'" in error.message
    assert error.message.endswith("and it has no parameter 'skuu'")


def test_extra_positional_param_is_invalid_params(dispatcher):
    """More positional params than the handler takes gives -32602."""
    error = invalid_params(dispatcher, "t.restock", ["A-1", 1, 2])
    assert "too many positional arguments" in error.message


def test_unknown_named_param_is_invalid_params_naming_it(dispatcher):
    """A named param the handler does not have gives -32602 whose message names it."""
    error = invalid_params(dispatcher, "t.restock", {"sku": "A-1", "colour": "red"})
    assert "'colour'" in error.message


@pytest.mark.parametrize(
    ("params", "name", "expected", "got"),
    [
        ({"sku": 5}, "sku", "string", "integer"),
        ({"sku": "A", "quantity": "5"}, "quantity", "integer", "string"),
        ({"sku": "A", "quantity": 5.0}, "quantity", "integer", "number"),
        ({"sku": "A", "quantity": True}, "quantity", "integer", "boolean"),
        ({"sku": None}, "sku", "string", "null"),
        (["A", None], "quantity", "integer", "null"),
        ({"sku": ["A"]}, "sku", "string", "array"),
    ],
    ids=["int-for-str", "str-for-int", "float-for-int", "bool-for-int", "null", "null-pos", "list"],
)
def test_type_mismatch_is_invalid_params_naming_the_parameter(
    dispatcher, params, name, expected, got
):
    """A value of the wrong JSON type for an annotated param gives -32602 naming the param."""
    error = invalid_params(dispatcher, "t.restock", params)
    assert f"parameter {name!r} must be {expected}" in error.message
    assert error.data == {"parameter": name}
    assert error.message.endswith(f"not {got}")


def test_optional_accepts_null(dispatcher):
    """`X | None` and `Optional[X]` params accept null as well as X."""
    call = dispatcher.resolve(request("t.maybe", [None, None]))
    assert call.bound.arguments == {"limit": None, "ratio": None}
    call = dispatcher.resolve(request("t.maybe", {"limit": 3, "ratio": 0.5}))
    assert call.bound.arguments == {"limit": 3, "ratio": 0.5}


def test_optional_still_checks_the_non_null_type(dispatcher):
    """An Optional param rejects a value that is neither null nor its type."""
    error = invalid_params(dispatcher, "t.maybe", {"limit": "3"})
    assert "parameter 'limit' must be integer or null" in error.message


def test_float_param_accepts_int_but_not_bool(dispatcher):
    """A float param accepts a JSON integer but not a boolean."""
    assert dispatcher.resolve(request("t.maybe", [None, 2])).bound.arguments["ratio"] == 2
    error = invalid_params(dispatcher, "t.maybe", [None, False])
    assert "parameter 'ratio'" in error.message


def test_bool_and_container_params_are_checked(dispatcher):
    """bool, list[...] and dict[...] params accept their JSON type and reject others."""
    call = dispatcher.resolve(request("t.flags", [True, ["a"], {"k": 1}]))
    assert call.bound.arguments == {"enabled": True, "tags": ["a"], "extra": {"k": 1}}
    assert "'enabled'" in invalid_params(dispatcher, "t.flags", [1, [], {}]).message
    assert "'tags'" in invalid_params(dispatcher, "t.flags", [True, "a", {}]).message
    assert "'extra'" in invalid_params(dispatcher, "t.flags", [True, [], []]).message


def test_unannotated_and_any_params_accept_anything(dispatcher):
    """Params without a simple JSON annotation are not type-checked."""
    call = dispatcher.resolve(request("t.untyped", [{"x": [1]}, None]))
    assert call.bound.arguments == {"anything": {"x": [1]}, "other": None}


def test_variadic_params_bind_and_named_first_is_checked(dispatcher):
    """*args and **kwargs take extra params; the annotated first param is still checked."""
    call = dispatcher.resolve(request("t.variadic", [1, 2, 3]))
    assert call.bound.arguments == {"first": 1, "rest": (2, 3)}
    call = dispatcher.resolve(request("t.variadic", {"first": 1, "anything": "x"}))
    assert call.bound.arguments == {"first": 1, "options": {"anything": "x"}}
    assert "'first'" in invalid_params(dispatcher, "t.variadic", ["1"]).message


def test_string_annotations_are_resolved_and_checked(dispatcher):
    """A string annotation such as "int" is resolved and checked like a real one."""
    assert dispatcher.resolve(request("t.stringly", [3])).bound.arguments == {"count": 3}
    error = invalid_params(dispatcher, "t.stringly", ["3"])
    assert "parameter 'count' must be integer" in error.message


def test_resolve_keeps_the_request(dispatcher):
    """The Call returned by resolve() carries the original request."""
    req = Request("t.restock", {"sku": "A"}, "abc", False)
    assert dispatcher.resolve(req).request is req
    note = Request("t.restock", {"sku": "A"}, None, True)
    assert dispatcher.resolve(note).request.is_notification


def test_unhashable_callable_handler_resolves():
    """A registered callable object that is unhashable still resolves and binds its params."""
    reg = Registry()
    reg.add(Scale(2), "t.scale")
    call = Dispatcher(reg).resolve(request("t.scale", [3]))
    assert call.bound.arguments == {"x": 3}
