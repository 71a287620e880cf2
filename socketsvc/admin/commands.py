"""What a ModelAdmin declares: :class:`Button` on a change form, :class:`Action` on a changelist."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, QuerySet

Params = Mapping[str, Any] | Sequence[Any] | None

NAME = re.compile(r"^\w+$")


@dataclass(frozen=True)
class Command:
    """What buttons and actions have in common."""

    method: str
    label: str
    permission: str = "change"
    notify: bool = False
    timeout: float | None = None
    name: str = ""
    help_text: str = ""

    @property
    def slug(self) -> str:
        """Return the name used in URLs and action menus (from the method unless given)."""
        return self.name or re.sub(r"\W+", "_", self.method)


@dataclass(frozen=True)
class Button(Command):
    """A button on the change form that calls *method* for the object shown.

    *params* builds the call's params from the object (default: ``{"pk": obj.pk}``);
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
