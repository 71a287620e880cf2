"""The shop's background tasks: long work that reports progress and leaves a result to read."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from django.db.models import F

from socketsvc.tasks import periodic, progress, retry

from .models import LowStockReport, Product

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task

# A stock-take is people counting shelves: each product takes a while.
SECONDS_PER_PRODUCT = 0.6


@task(queue_name="reports")
@retry(attempts=3, backoff=5.0)
def stock_count(
    skus: list[str] | None = None, seconds_per_product: float = SECONDS_PER_PRODUCT
) -> dict[str, Any]:
    """Count the stock of the given products (all if none), reporting progress as it goes."""
    products = Product.objects.select_related("supplier").order_by("sku")
    if skus:
        products = products.filter(sku__in=skus)
    counted = list(products)
    units = 0
    low: list[str] = []
    by_supplier: Counter[str] = Counter()
    for n, product in enumerate(counted, 1):
        progress(n - 1, len(counted), note=f"counting {product.sku}")
        time.sleep(seconds_per_product)
        units += product.stock
        by_supplier[product.supplier.name if product.supplier else "(none)"] += product.stock
        if product.needs_restock:
            low.append(product.sku)
        progress(n, len(counted), note=f"counted {product.sku}")
    return {
        "summary": f"Counted {len(counted)} products, {units} units; {len(low)} low on stock",
        "products": len(counted),
        "units": units,
        "low_on_stock": low,
        "units_by_supplier": dict(by_supplier),
    }


@periodic(cron="* * * * *")
@task
def check_low_stock() -> dict[str, Any]:
    """Every minute: record which products are at or below their reorder level."""
    low = list(Product.objects.filter(stock__lte=F("reorder_level")).values_list("sku", flat=True))
    report = LowStockReport.objects.create(
        products_checked=Product.objects.count(), low_on_stock=low
    )
    return {"summary": f"{len(low)} product(s) low on stock", "report": report.pk, "low": low}
