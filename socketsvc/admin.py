"""Admin buttons and actions that call socketsvc handlers.

A ModelAdmin declares what to call; the mixin renders the buttons, checks
permissions, calls the service and turns the reply into a Django message::

    from django.contrib import admin
    from socketsvc.admin import Action, Button, SocketServiceAdminMixin

    @admin.register(Product)
    class ProductAdmin(SocketServiceAdminMixin, admin.ModelAdmin):
        socketsvc_buttons = [
            Button("shop.restock", "Restock now", params=lambda p: {"sku": p.sku}),
        ]
        socketsvc_actions = [
            Action("shop.restock_products", "Restock selected products",
                   params=lambda products: {"skus": [p.sku for p in products]}),
        ]

Buttons appear in the change form's object tools, each a small POST form with
a CSRF token; actions appear in the changelist's action menu. Both carry
``data-socketsvc-method="<method>"``. Whatever the service does (answers,
fails, hangs, is not running), the user gets a message and the page comes
back within the call's timeout, never a server error.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.options import BaseModelAdmin
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, QuerySet
from django.forms import Form, Select
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import select_template
from django.urls import URLPattern, path, reverse

from . import protocol
from .client import (
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
    default_timeout,
    invoke,
    notify,
)

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = object

log = logging.getLogger("socketsvc.admin")

Params = Mapping[str, Any] | Sequence[Any] | None

# Built-in ModelAdmin permissions that take the object as their second argument.
_OBJECT_PERMISSIONS = frozenset({"view", "change", "delete"})
_NAME = re.compile(r"^\w+$")
_MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class _Command:
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
class Button(_Command):
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
class Action(_Command):
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


class MethodSelect(Select):
    """The action menu's select, marking socketsvc actions with their method."""

    def __init__(self, methods: Mapping[str, str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.methods = dict(methods)

    def create_option(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Add ``data-socketsvc-method`` to the options of socketsvc actions."""
        option: dict[str, Any] = super().create_option(*args, **kwargs)
        method = self.methods.get(str(option["value"]))
        if method is not None:
            option["attrs"] = {**option["attrs"], "data-socketsvc-method": method}
        return option


def _action_form_with_methods(base: type[Form], methods: Mapping[str, str]) -> type[Form]:
    """Return a subclass of the action form *base* whose menu marks socketsvc actions."""

    def __init__(form: Form, *args: Any, **kwargs: Any) -> None:
        base.__init__(form, *args, **kwargs)
        field = form.fields["action"]
        field.widget = MethodSelect(methods, attrs=field.widget.attrs)

    return type(base.__name__, (base,), {"__init__": __init__})


def _jsonable(params: Params) -> Params:
    """Return *params* with Django's extra types (Decimal, UUID, dates) as JSON text."""
    if params is None:
        return None
    data = params if isinstance(params, Mapping) else list(params)
    converted: Params = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    return converted


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _MAX_MESSAGE_CHARS:
        return text
    return text[: _MAX_MESSAGE_CHARS - 1] + "…"


def describe_result(result: Any) -> str:
    """Return a short human rendering of a handler's result.

    A dict with a ``"summary"`` string shows that; a flat dict shows its items;
    anything else is shown as compact JSON.
    """
    if isinstance(result, dict) and isinstance(result.get("summary"), str):
        return _shorten(result["summary"])
    if result is None:
        return "done"
    if isinstance(result, str):
        return _shorten(result)
    if isinstance(result, dict) and all(
        isinstance(value, str | int | float | bool) or value is None for value in result.values()
    ):
        return _shorten(", ".join(f"{key} {value}" for key, value in result.items()))
    return _shorten(json.dumps(result, separators=(", ", ": "), ensure_ascii=False))


def describe_failure(exc: SocketServiceError, method: str, timeout: float) -> str:
    """Return what went wrong, for a person, from a client exception."""
    if isinstance(exc, ServiceUnavailable):
        if exc.reason in ("not_running", "refused"):
            return (
                "the background service is not running. Start it "
                "(manage.py runsocketservice) and try again."
            )
        if exc.reason == "permission_denied":
            return (
                "the web server may not connect to the background service's socket; "
                "give its user write access to the socket (the socket's group)."
            )
        if exc.reason == "lost":
            return (
                "the connection to the background service was lost before it replied; "
                "the job may or may not have run. Check before trying again."
            )
        return f"the background service cannot be reached ({_shorten(str(exc))})."
    if isinstance(exc, CallTimeout):
        return (
            f"no reply from the background service within {timeout:g} s. The job may "
            "still be running; check its effect before trying again."
        )
    if isinstance(exc, HandlerError):
        detail = exc.data.get("message") if isinstance(exc.data, dict) else None
        text = detail if isinstance(detail, str) else exc.message
        error_type = exc.error_type or "Error"
        return f"the job failed with {error_type}: {_shorten(text)}"
    if isinstance(exc, DatabaseUnavailable):
        return "the background service cannot reach its database right now; try again later."
    if isinstance(exc, AccessDenied):
        return (
            "the background service does not accept requests from the web server's user; "
            "add it to SOCKETSVC['ALLOWED_UIDS'] or to an allowed group."
        )
    if isinstance(exc, ServiceBusy):
        if exc.code == protocol.SHUTTING_DOWN:
            return "the background service is shutting down; try again in a moment."
        return "the background service is busy; try again in a moment."
    if isinstance(exc, MethodNotFound):
        return (
            f"the background service has no handler {method!r}; is its app installed, "
            "and has the service been restarted since it was added?"
        )
    if isinstance(exc, InvalidParams):
        return f"the service refused its params: {_shorten(exc.message)}"
    if isinstance(exc, RemoteError):
        return f"the request was refused: {_shorten(exc.message)}"
    if isinstance(exc, ProtocolError):
        return "the background service sent a reply that could not be understood."
    return f"the background service could not be asked ({_shorten(str(exc))})."


class SocketServiceAdminMixin(_ModelAdmin):
    """Add ``socketsvc_buttons`` and ``socketsvc_actions`` to a ModelAdmin.

    Put it before ``admin.ModelAdmin`` in the bases. The change form uses
    ``admin/socketsvc/change_form.html``, which extends the template Django
    would otherwise have picked; a custom ``change_form_template`` can include
    ``admin/socketsvc/buttons.html`` in its ``object-tools-items`` block.
    """

    socketsvc_buttons: Sequence[Button] = ()
    socketsvc_actions: Sequence[Action] = ()
    change_form_template = "admin/socketsvc/change_form.html"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check the declarations when the ModelAdmin is defined, and mark its action menu."""
        super().__init_subclass__(**kwargs)
        if not issubclass(cls, BaseModelAdmin):  # a mixin of mixins: checked in its ModelAdmins
            return
        cls._socketsvc_check(cls.socketsvc_buttons, "socketsvc_buttons")
        cls._socketsvc_check(cls.socketsvc_actions, "socketsvc_actions")
        if cls.socketsvc_actions:
            methods = {action.slug: action.method for action in cls.socketsvc_actions}
            cls.action_form = _action_form_with_methods(cls.action_form, methods)

    def __init__(self, model: type[Model], admin_site: admin.AdminSite) -> None:
        super().__init__(model, admin_site)
        if self.socketsvc_actions and self.actions is not None:
            self.actions = [
                *self.actions,
                *(self._socketsvc_action_function(action) for action in self.socketsvc_actions),
            ]

    @classmethod
    def _socketsvc_check(cls, commands: Iterable[_Command], attribute: str) -> None:
        where = f"{cls.__name__}.{attribute}"
        seen: set[str] = set()
        for command in commands:
            if not _NAME.match(command.slug):
                raise ImproperlyConfigured(
                    f"{where}: name {command.slug!r} must be letters, digits and underscores"
                )
            if command.slug in seen:
                raise ImproperlyConfigured(
                    f"{where}: two entries are named {command.slug!r}; give one a distinct name="
                )
            seen.add(command.slug)
            if not callable(getattr(cls, f"has_{command.permission}_permission", None)):
                raise ImproperlyConfigured(
                    f"{where}: {command.slug!r} needs permission {command.permission!r}, but "
                    f"{cls.__name__} has no has_{command.permission}_permission() method"
                )

    def socketsvc_has_permission(
        self, request: HttpRequest, command: _Command, obj: Model | None = None
    ) -> bool:
        """Return whether the user may run *command* (on *obj*)."""
        check = getattr(self, f"has_{command.permission}_permission")
        if obj is not None and command.permission in _OBJECT_PERMISSIONS:
            return bool(check(request, obj))
        return bool(check(request))

    def _socketsvc_action_function(
        self, action: Action
    ) -> Callable[[SocketServiceAdminMixin, HttpRequest, QuerySet[Any]], None]:
        def run(modeladmin: SocketServiceAdminMixin, request: HttpRequest, queryset: Any) -> None:
            if not modeladmin.socketsvc_has_permission(request, action):
                raise PermissionDenied
            modeladmin.socketsvc_send(request, action, action.build_params(queryset))

        run.__name__ = action.slug
        run.short_description = action.label  # type: ignore[attr-defined]
        run.allowed_permissions = (action.permission,)  # type: ignore[attr-defined]
        return run

    def get_urls(self) -> list[URLPattern]:
        """Add the button URLs in front of the ModelAdmin's own."""
        opts = self.model._meta
        return [
            path(
                "<path:object_id>/socketsvc/<str:name>/",
                self.admin_site.admin_view(self.socketsvc_button_view),
                name=f"{opts.app_label}_{opts.model_name}_socketsvc",
            ),
            *super().get_urls(),
        ]

    def render_change_form(  # noqa: PLR0917 (Django's signature)
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Model | None = None,
    ) -> HttpResponse:
        """Put the buttons this user may press, and the template to extend, in the context."""
        opts = self.model._meta
        context["socketsvc_parent_template"] = select_template(
            [
                f"admin/{opts.app_label}/{opts.model_name}/change_form.html",
                f"admin/{opts.app_label}/change_form.html",
                "admin/change_form.html",
            ]
        )
        buttons = []
        if obj is not None and change:
            for button in self.socketsvc_buttons:
                if self.socketsvc_has_permission(request, button, obj):
                    url = reverse(
                        f"admin:{opts.app_label}_{opts.model_name}_socketsvc",
                        args=(quote(obj.pk), button.slug),
                        current_app=self.admin_site.name,
                    )
                    buttons.append({"button": button, "method": button.method, "url": url})
        context["socketsvc_buttons"] = buttons
        return super().render_change_form(request, context, add, change, form_url, obj)

    def socketsvc_button_view(
        self, request: HttpRequest, object_id: str, name: str
    ) -> HttpResponse:
        """Run one button for one object (POST only), then go back to the change form."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        button = next((b for b in self.socketsvc_buttons if b.slug == name), None)
        opts = self.model._meta
        obj = self.get_object(request, unquote(object_id)) if button is not None else None
        if button is None or obj is None:
            self.message_user(
                request,
                f"{opts.verbose_name} with ID {object_id!r} or its button {name!r} does not "
                "exist. Perhaps it was deleted?",
                messages.WARNING,
            )
            changelist = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_changelist",
                current_app=self.admin_site.name,
            )
            return HttpResponseRedirect(changelist)
        if not self.socketsvc_has_permission(request, button, obj):
            raise PermissionDenied
        self.socketsvc_send(request, button, button.build_params(obj))
        change_url = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=(quote(obj.pk),),
            current_app=self.admin_site.name,
        )
        preserved = {"preserved_filters": self.get_preserved_filters(request), "opts": opts}
        return HttpResponseRedirect(add_preserved_filters(preserved, change_url))

    def socketsvc_send(self, request: HttpRequest, command: _Command, params: Params) -> None:
        """Call (or notify) *command*'s method and tell the user what happened."""
        timeout = default_timeout() if command.timeout is None else command.timeout
        arguments = _jsonable(params)
        try:
            if command.notify:
                positional = list(arguments) if isinstance(arguments, Sequence) else []
                named = dict(arguments) if isinstance(arguments, Mapping) else {}
                notify(command.method, *positional, timeout=timeout, **named)
            else:
                result = invoke(
                    command.method,
                    dict(arguments) if isinstance(arguments, Mapping) else list(arguments or []),
                    timeout=timeout,
                )
        except SocketServiceError as exc:
            log.warning("socketsvc call %s failed: %s: %s", command.method, type(exc).__name__, exc)
            self.message_user(
                request,
                f"{command.label}: {describe_failure(exc, command.method, timeout)}",
                messages.ERROR,
            )
            return
        if command.notify:
            self.message_user(
                request,
                f"{command.label}: sent to the background service, which runs it on its own. "
                "Its result is not shown here; reload later to see its effect.",
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request, f"{command.label}: {describe_result(result)}", messages.SUCCESS
            )
