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

from socketsvc.admin.commands import Action, Button
from socketsvc.admin.dashboard import DashboardAdmin
from socketsvc.admin.messages import describe_failure, describe_result
from socketsvc.admin.mixin import SocketServiceAdminMixin
from socketsvc.admin.schedules import ScheduleRecordAdmin
from socketsvc.admin.tasks import TaskRecordAdmin
from socketsvc.admin.workflows import WorkflowRecordAdmin

__all__ = [
    "Action",
    "Button",
    "DashboardAdmin",
    "ScheduleRecordAdmin",
    "SocketServiceAdminMixin",
    "TaskRecordAdmin",
    "WorkflowRecordAdmin",
    "describe_failure",
    "describe_result",
]
