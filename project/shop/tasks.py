"""The shop's background tasks: long work that reports progress and leaves a result to read."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from django.db.models import F

from socketsvc.tasks import chain, chord, group, periodic, progress, retry

from .models import LowStockReport, Product, Supplier

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


# -- a workflow: count each supplier's stock side by side, then merge, then file the report ----


@task(queue_name="reports")
def count_supplier_stock(
    supplier_id: int, seconds_per_product: float = SECONDS_PER_PRODUCT * 3
) -> dict[str, Any]:
    """Count one supplier's products (a step of the stock-take workflow)."""
    supplier = Supplier.objects.get(pk=supplier_id)
    products = list(supplier.products.order_by("sku"))
    units = 0
    low: list[str] = []
    for n, product in enumerate(products, 1):
        progress(n - 1, len(products), note=f"counting {product.sku}")
        time.sleep(seconds_per_product)
        units += product.stock
        if product.needs_restock:
            low.append(product.sku)
        progress(n, len(products), note=f"counted {product.sku}")
    return {"supplier": supplier.name, "products": len(products), "units": units, "low": low}


@task(queue_name="reports")
def merge_stock_counts(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the suppliers' counts (in the order the suppliers were given) into one report."""
    progress(0, 1, note="merging")
    time.sleep(SECONDS_PER_PRODUCT)
    low = sorted(sku for count in counts for sku in count["low"])
    units = sum(count["units"] for count in counts)
    return {
        "summary": f"{len(counts)} supplier(s), {units} units; {len(low)} low on stock",
        "units_by_supplier": {count["supplier"]: count["units"] for count in counts},
        "low_on_stock": low,
    }


@task
def file_stock_report(report: dict[str, Any]) -> dict[str, Any]:
    """Keep the merged report as a low-stock report (the workflow's last step)."""
    filed = LowStockReport.objects.create(
        products_checked=Product.objects.count(), low_on_stock=report["low_on_stock"]
    )
    return {**report, "report": filed.pk}


def stock_take(suppliers: list[int]) -> Any:
    """Return the stock-take workflow of *suppliers*: each counted in parallel, then merged,
    then filed."""
    return chain(
        chord(group(count_supplier_stock.with_args(pk) for pk in suppliers), merge_stock_counts),
        file_stock_report,
    )
