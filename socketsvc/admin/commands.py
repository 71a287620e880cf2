"""What a ModelAdmin declares: :class:`Button` on a change form, :class:`Action` on a changelist.

Each either calls a handler (*method*) or enqueues a task (``task=``, a Task or
its dotted path), with params built from the object or the selected rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, QuerySet
from django.utils.module_loading import import_string

Params = Mapping[str, Any] | Sequence[Any] | None

NAME = re.compile(r"^\w+$")


@dataclass(frozen=True)
class Command:
    """What buttons and actions have in common."""

    method: str = ""
    label: str = ""
    permission: str = "change"
    notify: bool = False
    timeout: float | None = None
    name: str = ""
    help_text: str = ""
    task: Any = None

    def __post_init__(self) -> None:
        if bool(self.method) == (self.task is not None):
            raise ImproperlyConfigured(
                f"{type(self).__name__} {self.label!r}: give a handler method or task=, one of them"
            )
        if not self.label:
            raise ImproperlyConfigured(f"{type(self).__name__} {self.target!r} needs a label")

    @property
    def target(self) -> str:
        """Return the method name, or the task's dotted path."""
        if self.task is None:
            return self.method
        return self.task if isinstance(self.task, str) else str(self.task.module_path)

    @property
    def slug(self) -> str:
        """Return the name used in URLs and action menus (from the method or task unless given)."""
        if self.name:
            return self.name
        source = self.method if self.task is None else self.target.rsplit(".", 1)[-1]
        return re.sub(r"\W+", "_", source)

    def resolve_task(self) -> Any:
        """Return the Task to enqueue (importing it if it was given by path)."""
        return import_string(self.task) if isinstance(self.task, str) else self.task


@dataclass(frozen=True)
class Button(Command):
    """A button on the change form that calls *method* (or enqueues ``task=``) for the object shown.

    *params* builds the call's params from the object (default: ``{"pk": obj.pk}``);
    for a task, a dict becomes keyword arguments and a list positional ones;
    *permission* names a ``has_<permission>_permission`` method of the ModelAdmin
    (default: change); *notify* sends a notification instead of waiting for a
    result; *timeout* defaults to ``SOCKETSVC['CALL_TIMEOUT']``.
    """

    params: Callable[[Any], Params] | None = None

    def build_params(self, obj: Model) -> Params:
        """Return the params for *obj*."""
        if self.params is None:
            return {"pk": obj.pk}
        return self.params(obj)


@dataclass(frozen=True)
class Action(Command):
    """A changelist action that calls *method* once for the selected rows.

    *params* builds the call's params from the queryset of selected objects
    (default: ``{"pks": [...]}``); the other options are those of :class:`Button`.
    """

    params: Callable[[QuerySet[Any]], Params] | None = None

    def build_params(self, queryset: QuerySet[Any]) -> Params:
        """Return the params for the selected objects."""
        if self.params is None:
            return {"pks": list(queryset.values_list("pk", flat=True))}
        return self.params(queryset)


def jsonable(params: Params) -> Params:
    """Return *params* with Django's extra types (Decimal, UUID, dates) as JSON text."""
    if params is None:
        return None
    data = params if isinstance(params, Mapping) else list(params)
    converted: Params = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    return converted
