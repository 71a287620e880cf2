"""Background jobs of the demo shop, served by ``manage.py runsocketservice``."""

from django.db import transaction
from django.db.models import F, Sum

from socketsvc import RPCError, handler

from .models import Product, StockMovement

PRODUCT_NOT_FOUND = 1001
OUT_OF_STOCK = 1002


def _product_for_update(sku: str) -> Product:
    product = Product.objects.select_for_update().filter(sku=sku).first()
    if product is None:
        raise RPCError(PRODUCT_NOT_FOUND, f"No product with SKU {sku!r}", {"sku": sku})
    return product


def _restock(product: Product, quantity: int, reason: str) -> int:
    Product.objects.filter(pk=product.pk).update(stock=F("stock") + quantity)
    StockMovement.objects.create(product=product, change=quantity, reason=reason)
    product.refresh_from_db(fields=["stock"])
    return product.stock


@handler
def restock(sku: str, quantity: int | None = None) -> dict[str, object]:
    """Add stock to one product (default: its reorder quantity) and record the movement."""
    with transaction.atomic():
        product = _product_for_update(sku)
        added = product.reorder_quantity if quantity is None else quantity
        if added <= 0:
            raise ValueError("quantity must be positive")
        stock = _restock(product, added, "manual restock")
    return {"sku": sku, "added": added, "stock": stock}


@handler
def sell(sku: str, quantity: int = 1) -> dict[str, object]:
    """Take sold units out of stock and record the movement."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    with transaction.atomic():
        product = _product_for_update(sku)
        if product.stock < quantity:
            raise RPCError(
                OUT_OF_STOCK,
                f"Only {product.stock} of {sku} in stock, cannot sell {quantity}",
                {"sku": sku, "stock": product.stock},
            )
        Product.objects.filter(pk=product.pk).update(stock=F("stock") - quantity)
        StockMovement.objects.create(product=product, change=-quantity, reason="sale")
        product.refresh_from_db(fields=["stock"])
    return {"sku": sku, "sold": quantity, "stock": product.stock, "low": product.needs_restock}


@handler
def product(sku: str) -> dict[str, object]:
    """Return one product's stock figures."""
    item = (
        Product.objects.filter(sku=sku)
        .values("sku", "name", "stock", "reorder_level", "reorder_quantity")
        .first()
    )
    if item is None:
        raise RPCError(PRODUCT_NOT_FOUND, f"No product with SKU {sku!r}", {"sku": sku})
    return item


@handler
def restock_low_stock() -> dict[str, object]:
    """Restock every product at or below its reorder level; return what was ordered."""
    restocked = []
    with transaction.atomic():
        low = Product.objects.select_for_update().filter(stock__lte=F("reorder_level"))
        for product in low:
            _restock(product, product.reorder_quantity, "automatic reorder")
            restocked.append({"sku": product.sku, "added": product.reorder_quantity})
    units = sum(item["added"] for item in restocked)
    return {
        "restocked": len(restocked),
        "units": units,
        "products": restocked,
        "summary": f"Restocked {len(restocked)} product(s), {units} unit(s) in all",
    }


@handler
def stock_report() -> dict[str, object]:
    """Summarize stock: products, units on hand, and which ones need reordering."""
    products = Product.objects.all()
    return {
        "products": products.count(),
        "units": products.aggregate(total=Sum("stock"))["total"] or 0,
        "low_stock": [p.sku for p in products if p.needs_restock],
        "movements": StockMovement.objects.count(),
    }
