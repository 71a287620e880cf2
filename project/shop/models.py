"""A small stock-keeping model: suppliers, products, purchase orders, and stock movements."""

from django.db import models


class Supplier(models.Model):
    name = models.CharField(max_length=200, unique=True)
    email = models.EmailField()
    lead_time_days = models.PositiveIntegerField(
        default=3, help_text="Days between ordering and delivery."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    sku = models.CharField("SKU", max_length=32, unique=True)
    name = models.CharField(max_length=200)
    supplier = models.ForeignKey(
        Supplier, on_delete=models.PROTECT, related_name="products", null=True, blank=True
    )
    stock = models.PositiveIntegerField(default=0)
    reorder_level = models.PositiveIntegerField(
        default=5, help_text="Restock when stock falls to this level or below."
    )
    reorder_quantity = models.PositiveIntegerField(default=20)

    class Meta:
        ordering = ["sku"]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"

    @property
    def needs_restock(self) -> bool:
        return self.stock <= self.reorder_level


class PurchaseOrder(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SENT = "sent", "Sent to supplier"
        RECEIVED = "received", "Received"

    supplier = models.ForeignKey(Supplier, on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"PO #{self.pk} to {self.supplier}"


class PurchaseOrderLine(models.Model):
    order = models.ForeignKey(PurchaseOrder, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_lines")
    quantity = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["order", "product"], name="one_line_per_product")
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product.sku}"


class StockMovement(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="movements")
    change = models.IntegerField()
    reason = models.CharField(max_length=200)
    purchase_order = models.ForeignKey(
        PurchaseOrder, on_delete=models.SET_NULL, null=True, blank=True, related_name="movements"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.product.sku} {self.change:+d} ({self.reason})"


class LowStockReport(models.Model):
    """What the periodic low-stock check found, once a minute."""

    created_at = models.DateTimeField(auto_now_add=True)
    products_checked = models.PositiveIntegerField()
    low_on_stock = models.JSONField(default=list, help_text="SKUs at or below their reorder level.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{len(self.low_on_stock)} low of {self.products_checked} at {self.created_at:%H:%M}"
