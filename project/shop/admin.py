from django.contrib import admin

from .models import Product, StockMovement


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "stock", "reorder_level", "reorder_quantity"]
    search_fields = ["sku", "name"]


@admin.register(StockMovement)
class StockMovementAdmin(admin.ModelAdmin):
    list_display = ["created_at", "product", "change", "reason"]
    list_filter = ["reason"]
