"""A small stock-keeping model: products and the movements that change their stock."""

from django.db import models


class Product(models.Model):
    sku = models.CharField("SKU", max_length=32, unique=True)
    name = models.CharField(max_length=200)
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


class StockMovement(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="movements")
    change = models.IntegerField()
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.product.sku} {self.change:+d} ({self.reason})"
