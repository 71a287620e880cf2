"""The ``@handler`` decorator, the method registry, and autodiscovery of ``handlers.py``.

A handler is a plain function in a ``handlers.py`` module of any installed app::

    from socketsvc import handler

    @handler                      # method "shop.restock" for an app labelled "shop"
    def restock(sku: str, quantity: int = 10) -> dict: ...

    @handler("reports.daily")     # an explicit method name
    def daily_report() -> str: ...

The decorator returns the function unchanged, so handlers stay callable (and
testable, and enqueueable elsewhere) as ordinary Python. Each handler's
parameter binding is prepared when it registers (:mod:`socketsvc.methods.params`), so
a signature that cannot be evaluated fails at startup, naming the handler.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from django.core.exceptions import ImproperlyConfigured

from socketsvc.methods.params import BadSignature, Binder
from socketsvc.protocol import BUILTIN_PREFIX

F = TypeVar("F", bound=Callable[..., Any])

RESERVED_PREFIX = BUILTIN_PREFIX


@dataclass(frozen=True)
class Method:
    """A registered handler and what the daemon needs to know about it."""

    name: str
    func: Callable[..., Any]
    binder: Binder
    # Built-in methods run on the event loop; handlers run on worker threads.
    inline: bool = False
    # An ``async def`` handler: run to its end on an event loop in the worker thread.
    asynchronous: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "asynchronous", inspect.iscoroutinefunction(self.func))

    @property
    def signature(self) -> inspect.Signature:
        """Return the handler's signature, annotations evaluated."""
        return self.binder.signature

    @property
    def location(self) -> str:
        """Return ``module.function (file:line)`` for error messages."""
        code = getattr(self.func, "__code__", None)
        where = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
        return f"{self.func.__module__}.{self.func.__qualname__}{where}"

    @property
    def summary(self) -> str:
        """Return the first line of the docstring."""
        doc = inspect.getdoc(self.func) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def describe(self) -> dict[str, str]:
        """Return what ``rpc.methods`` shows for this method."""
        return {"name": self.name, "signature": f"{self.name}{self.signature}", "doc": self.summary}


def _check_name(name: str, builtin: bool) -> str:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ImproperlyConfigured(f"handler name must be a non-empty string, not {name!r}")
    if name.startswith(RESERVED_PREFIX) and not builtin:
        raise ImproperlyConfigured(
            f"handler name {name!r} is reserved: names starting with 'rpc.' are built in"
        )
    if builtin and not name.startswith(RESERVED_PREFIX):
        raise ImproperlyConfigured(f"built-in method {name!r} must start with 'rpc.'")
    return name


def _default_name(func: Callable[..., Any]) -> str:
    from django.apps import apps

    app = apps.get_containing_app_config(func.__module__)
    if app is None:
        raise ImproperlyConfigured(
            f"cannot name handler {func.__module__}.{func.__qualname__}: its module is not "
            "inside an installed app; add the app to INSTALLED_APPS or give an explicit "
            "name with @handler('app.name')"
        )
    return f"{app.label}.{func.__name__}"


class Registry:
    """Method name -> Method, with duplicate detection.

    A registry of *builtins* holds the ``rpc.*`` methods, which run on the
    event loop; any other holds handlers, whose names may not start with ``rpc.``.
    """

    def __init__(self, builtins: bool = False) -> None:
        self._methods: dict[str, Method] = {}
        self._lock = threading.Lock()
        self._builtins = builtins

    def add(self, func: Callable[..., Any], name: str | None = None) -> Method:
        """Register *func* under *name* (default ``<app_label>.<function name>``)."""
        if not callable(func):
            raise ImproperlyConfigured(f"@handler needs a function, not {func!r}")
        checked = _check_name(name if name is not None else _default_name(func), self._builtins)
        try:
            binder = Binder.prepare(checked, func)
        except BadSignature as exc:
            raise ImproperlyConfigured(str(exc)) from None
        method = Method(checked, func, binder, inline=self._builtins)
        with self._lock:
            existing = self._methods.get(method.name)
            if existing is not None and existing.func is not func:
                raise ImproperlyConfigured(
                    f"handler name {method.name!r} is defined twice: in {existing.location} "
                    f"and in {method.location}. Rename one function or give it an explicit "
                    f"name with @handler('...')."
                )
            self._methods[method.name] = method
        return method

    def get(self, name: str) -> Method | None:
        """Return the method registered as *name*, if any."""
        return self._methods.get(name)

    def __iter__(self) -> Iterator[Method]:
        return iter(sorted(self._methods.values(), key=lambda m: m.name))

    def __len__(self) -> int:
        return len(self._methods)

    def clear(self) -> None:
        """Forget every method (for tests)."""
        with self._lock:
            self._methods.clear()


registry = Registry()


@overload
def handler(arg: F, /) -> F: ...
@overload
def handler(arg: str | None = None, /) -> Callable[[F], F]: ...
def handler(arg: F | str | None = None, /) -> F | Callable[[F], F]:
    """Register a function as a socketsvc method: ``@handler`` or ``@handler("name")``."""
    if callable(arg):
        registry.add(arg)
        return arg

    def decorate(func: F) -> F:
        registry.add(func, arg)
        return func

    return decorate


def autodiscover() -> Registry:
    """Import the ``handlers`` module of every installed app and return the registry."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("handlers")
    return registry
