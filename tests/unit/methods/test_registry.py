"""socketsvc.methods.registry: method naming, duplicate detection, descriptions and autodiscovery."""

import inspect
from typing import Any

import pytest
from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from socketsvc.methods.registry import Method, Registry, autodiscover, handler, registry


class RpcLabelledApp(AppConfig):
    """An app whose label is "rpc", so default names would fall in the reserved namespace."""

    name = "tests"
    label = "rpc"


def _func(name: str, module: str = "tests.testapp.handlers") -> Any:
    """Return a fresh function called *name* that claims to live in *module*."""

    def f(a: int, b: str = "x") -> int:
        """First line of the doc.

        More detail that describe() leaves out.
        """
        return a

    f.__name__ = name
    f.__qualname__ = name
    f.__module__ = module
    return f


def _location(func: Any) -> str:
    code = func.__code__
    return f"{func.__module__}.{func.__qualname__} ({code.co_filename}:{code.co_firstlineno})"


def test_default_name_is_app_label_and_function_name():
    """A function in an installed app's module is named "<app_label>.<function name>"."""
    reg = Registry()
    method = reg.add(_func("restock_all"))
    assert method.name == "testapp.restock_all"
    assert reg.get("testapp.restock_all") is method


def test_default_name_uses_the_label_not_the_module_path():
    """The default name uses the app label ("shop"), not the dotted app name ("project.shop")."""
    reg = Registry()
    assert reg.add(_func("report", "project.shop.handlers")).name == "shop.report"
    assert reg.add(_func("deep", "tests.testapp.sub.module")).name == "testapp.deep"


def test_explicit_names_are_used_verbatim():
    """An explicit name is used as given, dotted or not."""
    reg = Registry()
    assert reg.add(_func("a"), "reports.daily").name == "reports.daily"
    assert reg.add(_func("b"), "nodots").name == "nodots"
    assert reg.add(_func("c", "not.an.app"), "x.y.z").name == "x.y.z"
    assert [m.name for m in reg] == ["nodots", "reports.daily", "x.y.z"]


@pytest.mark.parametrize("name", ["rpc.ping", "rpc.status", "rpc.methods", "rpc.mine"])
def test_rpc_prefix_is_reserved(name):
    """An explicit name starting with "rpc." is rejected as reserved."""
    reg = Registry()
    with pytest.raises(ImproperlyConfigured, match="reserved"):
        reg.add(_func("f"), name)
    assert len(reg) == 0


def test_default_name_in_an_app_labelled_rpc_is_reserved_too():
    """A default name that lands in the "rpc." namespace is rejected like an explicit one."""
    with override_settings(
        INSTALLED_APPS=[*settings.INSTALLED_APPS, "tests.unit.methods.test_registry.RpcLabelledApp"]
    ):
        reg = Registry()
        with pytest.raises(ImproperlyConfigured, match="reserved"):
            reg.add(_func("ping", "tests.rpc_handlers"))


@pytest.mark.parametrize("name", ["", " a.b", "a.b ", 5])
def test_empty_padded_or_non_string_name_is_rejected(name):
    """An explicit name that is empty, padded with spaces or not a string is rejected."""
    with pytest.raises(ImproperlyConfigured, match="non-empty string"):
        Registry().add(_func("f"), name)


def test_non_callable_is_rejected():
    """Registering something that is not callable is an error."""
    with pytest.raises(ImproperlyConfigured, match="needs a function"):
        Registry().add("not a function", "x.y")  # type: ignore[arg-type]


def test_duplicate_name_names_both_locations():
    """A second function under a taken name is an error naming both module.qualname (file:line)."""
    reg = Registry()
    first = _func("dup")
    second = _func("dup", "project.shop.handlers")
    reg.add(first, "same.name")
    with pytest.raises(ImproperlyConfigured) as info:
        reg.add(second, "same.name")
    message = str(info.value)
    assert "'same.name'" in message
    assert _location(first) in message
    assert _location(second) in message
    assert "tests.testapp.handlers.dup" in message
    assert "project.shop.handlers.dup" in message
    assert reg.get("same.name").func is first


def test_duplicate_default_name_is_rejected():
    """Two functions whose default names collide are rejected, keeping the first."""
    reg = Registry()
    first = _func("same")
    reg.add(first)
    with pytest.raises(ImproperlyConfigured, match="defined twice"):
        reg.add(_func("same"))
    assert reg.get("testapp.same").func is first
    assert len(reg) == 1


def test_registering_the_same_function_twice_is_harmless():
    """Adding the very same function under the same name again is not a duplicate."""
    reg = Registry()
    func = _func("again")
    reg.add(func)
    reg.add(func)
    reg.add(func, "testapp.again")
    assert len(reg) == 1


def test_function_outside_installed_apps_needs_an_explicit_name():
    """Without an explicit name, a function outside every installed app is a clear error."""
    reg = Registry()
    with pytest.raises(ImproperlyConfigured) as info:
        reg.add(_func("orphan", "somewhere.else.handlers"))
    message = str(info.value)
    assert "somewhere.else.handlers.orphan" in message
    assert "not inside an installed app" in message
    assert "explicit" in message
    assert len(reg) == 0


def test_describe_gives_signature_and_first_doc_line():
    """Method.describe() gives the name, "name(signature)" and the first docstring line."""
    method = Registry().add(_func("summarize"))
    assert method.describe() == {
        "name": "testapp.summarize",
        "signature": "testapp.summarize(a: int, b: str = 'x') -> int",
        "doc": "First line of the doc.",
    }


def test_describe_without_docstring_has_empty_doc():
    """A function without a docstring is described with an empty doc."""

    def bare() -> None:
        return None

    method = Registry().add(bare, "x.bare")
    assert method.describe() == {"name": "x.bare", "signature": "x.bare() -> None", "doc": ""}


def test_method_keeps_the_signature_of_the_function():
    """The registered Method carries the function and its inspect.Signature."""
    func = _func("sig")
    method = Registry().add(func)
    assert isinstance(method, Method)
    assert method.func is func
    assert method.signature == inspect.signature(func)
    assert list(method.signature.parameters) == ["a", "b"]


def test_iteration_is_sorted_by_name():
    """Iterating a registry yields its methods sorted by name; get() of an unknown name is None."""
    reg = Registry()
    for name in ["b.z", "a.y", "c.x"]:
        reg.add(_func("f"), name)
    assert [m.name for m in reg] == ["a.y", "b.z", "c.x"]
    assert reg.get("nope") is None
    reg.clear()
    assert len(reg) == 0


def test_autodiscover_fills_the_global_registry():
    """autodiscover() imports every app's handlers module into the global registry."""
    found = autodiscover()
    assert found is registry
    names = {method.name for method in found}
    assert {"shop.restock", "testapp.add", "custom.named"} <= names
    assert not any(name.startswith("rpc.") for name in names)


def test_handler_decorator_returns_the_function_unchanged():
    """@handler, @handler() and @handler("name") all return the very function they were given."""
    from tests.testapp import handlers

    autodiscover()
    assert handler(handlers.add) is handlers.add
    assert handler()(handlers.add) is handlers.add
    assert handler("custom.named")(handlers.explicitly_named) is handlers.explicitly_named
    assert registry.get("testapp.add").func is handlers.add
    assert registry.get("custom.named").func is handlers.explicitly_named
    assert handlers.add(2, 3) == 5
