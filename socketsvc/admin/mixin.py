"""The ModelAdmin mixin: renders the buttons, checks permissions, calls, and says what happened."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.options import BaseModelAdmin
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db.models import Model, QuerySet
from django.forms import Form, Select
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import select_template
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from socketsvc.admin.commands import NAME, Action, Button, Command, Params, jsonable
from socketsvc.admin.messages import describe_failure, describe_result
from socketsvc.client import call_with, default_timeout, notify_with
from socketsvc.errors import SocketServiceError

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = object

log = logging.getLogger(__name__)

# Built-in ModelAdmin permissions that take the object as their second argument.
_OBJECT_PERMISSIONS = frozenset({"view", "change", "delete"})


class MethodSelect(Select):
    """The action menu's select, marking socketsvc actions with their method or task."""

    def __init__(self, marks: Mapping[str, dict[str, str]], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks = dict(marks)

    def create_option(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Add ``data-socketsvc-method`` (or ``-task``) to the options of socketsvc actions."""
        option: dict[str, Any] = super().create_option(*args, **kwargs)
        mark = self.marks.get(str(option["value"]))
        if mark is not None:
            option["attrs"] = {**option["attrs"], **mark}
        return option


def data_attribute(command: Command) -> dict[str, str]:
    """Return the HTML attribute that names what *command* runs."""
    kind = "method" if command.task is None else "task"
    return {f"data-socketsvc-{kind}": command.target}


def _action_form_with_methods(base: type[Form], marks: Mapping[str, dict[str, str]]) -> type[Form]:
    """Return a subclass of the action form *base* whose menu marks socketsvc actions."""

    def __init__(form: Form, *args: Any, **kwargs: Any) -> None:
        base.__init__(form, *args, **kwargs)
        field = form.fields["action"]
        field.widget = MethodSelect(marks, attrs=field.widget.attrs)

    return type(base.__name__, (base,), {"__init__": __init__})


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
            marks = {action.slug: data_attribute(action) for action in cls.socketsvc_actions}
            cls.action_form = _action_form_with_methods(cls.action_form, marks)

    def __init__(self, model: type[Model], admin_site: admin.AdminSite) -> None:
        super().__init__(model, admin_site)
        if self.socketsvc_actions and self.actions is not None:
            self.actions = [
                *self.actions,
                *(self._socketsvc_action_function(action) for action in self.socketsvc_actions),
            ]

    @classmethod
    def _socketsvc_check(cls, commands: Iterable[Command], attribute: str) -> None:
        where = f"{cls.__name__}.{attribute}"
        seen: set[str] = set()
        for command in commands:
            if not NAME.match(command.slug):
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
        self, request: HttpRequest, command: Command, obj: Model | None = None
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
                    kind = "method" if button.task is None else "task"
                    buttons.append(
                        {"button": button, "kind": kind, "target": button.target, "url": url}
                    )
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

    def socketsvc_send(self, request: HttpRequest, command: Command, params: Params) -> None:
        """Call (or notify) *command*'s method, or enqueue its task; tell the user what happened."""
        if command.task is not None:
            self._socketsvc_enqueue(request, command, params)
            return
        timeout = default_timeout() if command.timeout is None else command.timeout
        arguments = jsonable(params)
        sent = dict(arguments) if isinstance(arguments, Mapping) else list(arguments or [])
        try:
            if command.notify:
                notify_with(command.method, sent, timeout=timeout)
            else:
                result = call_with(command.method, sent, timeout=timeout)
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

    def _socketsvc_enqueue(self, request: HttpRequest, command: Command, params: Params) -> None:
        arguments = jsonable(params)
        args = list(arguments) if isinstance(arguments, Sequence) else []
        kwargs = dict(arguments) if isinstance(arguments, Mapping) else {}
        try:
            result = command.resolve_task().enqueue(*args, **kwargs)
        except Exception as exc:
            log.warning("socketsvc task %s not queued: %r", command.target, exc)
            self.message_user(
                request,
                f"{command.label}: the task could not be queued ({type(exc).__name__}); "
                "see the web server's log.",
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            format_html(
                "{}: queued as task {}; its page shows its progress and its result.",
                command.label,
                self._socketsvc_result_link(result.id),
            ),
            messages.SUCCESS,
        )

    def _socketsvc_result_link(self, result_id: str) -> SafeString:
        """Link a task result's admin page, if this site shows task results."""
        from socketsvc.models import TaskRecord

        if (
            not self.admin_site.is_registered(TaskRecord)
            or not TaskRecord.objects.filter(id=result_id).exists()
        ):
            return format_html("<code>{}</code>", result_id)
        url = reverse(f"{self.admin_site.name}:socketsvc_taskrecord_change", args=[result_id])
        return format_html(
            '<a href="{}" data-socketsvc-result="{}">{}</a>', url, result_id, result_id[:8]
        )
