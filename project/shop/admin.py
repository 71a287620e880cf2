"""The shop's admin: buttons and actions that hand the work to the background service."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from socketsvc.admin import Action, Button, SocketServiceAdminMixin

from . import tasks
from .models import (
    LowStockReport,
    Product,
    PurchaseOrder,
    PurchaseOrderLine,
    StockMovement,
    Supplier,
)


def _skus(products: QuerySet[Product]) -> dict[str, Any]:
    return {"skus": list(products.values_list("sku", flat=True))}


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class StockMovementInline(ReadOnlyInline):
    model = StockMovement
    fk_name = "product"
    fields = ["created_at", "change", "reason", "purchase_order"]
    readonly_fields = fields
    verbose_name_plural = "Stock movements (newest first)"


@admin.register(Supplier)
class SupplierAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "lead_time_days"]
    search_fields = ["name", "email"]
    actions = ["stock_take"]

    @admin.action(description="Stock-take: count each supplier in parallel, then merge (workflow)")
    def stock_take(self, request: HttpRequest, queryset: QuerySet[Supplier]) -> None:
        """Start the stock-take workflow of the selected suppliers; link to its graph."""
        flow = tasks.stock_take(list(queryset.order_by("name").values_list("pk", flat=True)))
        started = flow.enqueue(name=f"Stock-take of {queryset.count()} supplier(s)")
        url = reverse("admin:socketsvc_workflowrecord_change", args=[started.id])
        self.message_user(
            request,
            format_html(
                'Stock-take started: <a href="{}">watch its workflow</a> (each supplier counted '
                "in parallel, then merged and filed).",
                url,
            ),
            messages.SUCCESS,
        )


@admin.register(Product)
class ProductAdmin(SocketServiceAdminMixin, admin.ModelAdmin):
    list_display = [
        "sku",
        "name",
        "supplier",
        "stock",
        "reorder_level",
        "reorder_quantity",
        "low_on_stock",
    ]
    list_filter = ["supplier"]
    search_fields = ["sku", "name"]
    fields = ["sku", "name", "supplier", "stock", "reorder_level", "reorder_quantity"]
    readonly_fields = ["stock"]
    inlines = [StockMovementInline]
    socketsvc_buttons = [
        Button(
            "shop.restock",
            "Restock now",
            params=lambda product: {"sku": product.sku},
            help_text="Add the reorder quantity to stock.",
        ),
        Button(
            "shop.sell",
            "Record a sale",
            params=lambda product: {"sku": product.sku},
            help_text="Take one unit out of stock.",
        ),
    ]
    socketsvc_actions = [
        Action("shop.restock_products", "Restock selected products", params=_skus),
        Action("shop.order_products", "Order selected products from their suppliers", params=_skus),
        Action(
            task="project.shop.tasks.stock_count",
            label="Count stock of selected products (a report in the background)",
            params=_skus,
        ),
    ]

    @admin.display(boolean=True, description="Low on stock")
    def low_on_stock(self, product: Product) -> bool:
        return product.needs_restock


class PurchaseOrderLineInline(admin.TabularInline):
    model = PurchaseOrderLine
    extra = 0
    autocomplete_fields = ["product"]


@admin.register(PurchaseOrder)
class PurchaseOrderAdmin(SocketServiceAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "supplier",
        "status",
        "units",
        "created_at",
        "sent_at",
        "received_at",
    ]
    list_filter = ["status", "supplier"]
    readonly_fields = ["status", "created_at", "sent_at", "received_at"]
    inlines = [PurchaseOrderLineInline]
    socketsvc_buttons = [
        Button(
            "shop.send_order",
            "Send to supplier",
            notify=True,
            help_text="Send the order to the supplier in the background and mark it sent.",
        ),
        Button(
            "shop.receive_orders",
            "Receive delivery",
            params=lambda order: {"pks": [order.pk]},
            help_text="Book the delivered units into stock.",
        ),
    ]
    socketsvc_actions = [Action("shop.receive_orders", "Receive selected orders")]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PurchaseOrder]:
        return super().get_queryset(request).annotate(total_units=Sum("lines__quantity"))

    @admin.display(description="Units", ordering="total_units")
    def units(self, order: PurchaseOrder) -> int:
        return getattr(order, "total_units", None) or 0


@admin.register(StockMovement)
class StockMovementAdmin(admin.ModelAdmin):
    list_display = ["created_at", "product", "change", "reason", "purchase_order"]
    list_filter = ["reason", "product"]
    list_select_related = ["product", "purchase_order__supplier"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LowStockReport)
class LowStockReportAdmin(admin.ModelAdmin):
    list_display = ["created_at", "products_checked", "low_on_stock"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
