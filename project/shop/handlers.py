"""Background jobs of the demo shop, served by ``manage.py runsocketservice``."""

from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from socketsvc import RPCError, handler

from .models import Product, PurchaseOrder, PurchaseOrderLine, StockMovement

PRODUCT_NOT_FOUND = 1001
OUT_OF_STOCK = 1002
ORDER_NOT_FOUND = 1003
ORDER_ALREADY_SENT = 1004
NOTHING_TO_RECEIVE = 1005


def _product_for_update(sku: str) -> Product:
    product = Product.objects.select_for_update().filter(sku=sku).first()
    if product is None:
        raise RPCError(PRODUCT_NOT_FOUND, f"No product with SKU {sku!r}", {"sku": sku})
    return product


def _products_for_update(skus: list[str]) -> list[Product]:
    products = list(Product.objects.select_for_update().filter(sku__in=skus))
    missing = sorted(set(skus) - {product.sku for product in products})
    if missing:
        raise RPCError(
            PRODUCT_NOT_FOUND, f"No product with SKU {', '.join(missing)}", {"skus": missing}
        )
    return products


def _restock(
    product: Product, quantity: int, reason: str, order: PurchaseOrder | None = None
) -> int:
    Product.objects.filter(pk=product.pk).update(stock=F("stock") + quantity)
    StockMovement.objects.create(
        product=product, change=quantity, reason=reason, purchase_order=order
    )
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


@handler
def restock_products(skus: list[str]) -> dict[str, object]:
    """Restock each of these products by its reorder quantity."""
    with transaction.atomic():
        products = _products_for_update(skus)
        added = {product.sku: product.reorder_quantity for product in products}
        for product in products:
            _restock(product, product.reorder_quantity, "manual restock")
    units = sum(added.values())
    items = ", ".join(f"{sku} +{quantity}" for sku, quantity in added.items())
    return {
        "restocked": added,
        "summary": f"Restocked {len(added)} product(s), {units} unit(s) in all: {items}",
    }


@handler
def order_products(skus: list[str]) -> dict[str, object]:
    """Put each product's reorder quantity on a draft purchase order to its supplier."""
    with transaction.atomic():
        products = _products_for_update(skus)
        orders: dict[int, PurchaseOrder] = {}
        without_supplier = []
        for product in products:
            if product.supplier_id is None:
                without_supplier.append(product.sku)
                continue
            order = orders.get(product.supplier_id)
            if order is None:
                order, _ = PurchaseOrder.objects.get_or_create(
                    supplier_id=product.supplier_id, status=PurchaseOrder.Status.DRAFT
                )
                orders[product.supplier_id] = order
            line, created = PurchaseOrderLine.objects.get_or_create(
                order=order, product=product, defaults={"quantity": product.reorder_quantity}
            )
            if not created:
                PurchaseOrderLine.objects.filter(pk=line.pk).update(
                    quantity=F("quantity") + product.reorder_quantity
                )
    summary = f"{len(orders)} draft purchase order(s): " + ", ".join(
        f"PO #{order.pk} to {order.supplier}" for order in orders.values()
    )
    if without_supplier:
        summary += f"; no supplier for {', '.join(without_supplier)}"
    return {
        "orders": [order.pk for order in orders.values()],
        "without_supplier": without_supplier,
        "summary": summary,
    }


@handler
def send_order(pk: int) -> dict[str, object]:
    """Send a draft purchase order to its supplier (a file in VAR_DIR/outbox) and mark it sent."""
    with transaction.atomic():
        order = (
            PurchaseOrder.objects.select_for_update()
            .select_related("supplier")
            .filter(pk=pk)
            .first()
        )
        if order is None:
            raise RPCError(ORDER_NOT_FOUND, f"No purchase order #{pk}", {"pk": pk})
        if order.status != PurchaseOrder.Status.DRAFT:
            raise RPCError(
                ORDER_ALREADY_SENT, f"{order} is {order.get_status_display().lower()} already"
            )
        lines = "".join(
            f"{line.quantity:>6} x {line.product.sku:<10} {line.product.name}\n"
            for line in order.lines.select_related("product")
        )
        outbox = Path(settings.VAR_DIR) / "outbox"
        outbox.mkdir(parents=True, exist_ok=True)
        document = outbox / f"purchase-order-{order.pk}.txt"
        document.write_text(
            f"To: {order.supplier.email}\nSubject: Purchase order #{order.pk}\n\n"
            f"Please deliver:\n{lines}"
        )
        order.status = PurchaseOrder.Status.SENT
        order.sent_at = timezone.now()
        order.save(update_fields=["status", "sent_at"])
    return {
        "pk": pk,
        "document": str(document),
        "summary": f"{order} sent to {order.supplier.email}",
    }


@handler
def receive_orders(pks: list[int]) -> dict[str, object]:
    """Book the delivery of sent purchase orders into stock and mark them received."""
    with transaction.atomic():
        orders = list(PurchaseOrder.objects.select_for_update().filter(pk__in=pks))
        receivable = [order for order in orders if order.status == PurchaseOrder.Status.SENT]
        skipped = [
            f"#{order.pk} ({order.get_status_display().lower()})"
            for order in orders
            if order.status != PurchaseOrder.Status.SENT
        ]
        if not receivable:
            reason = f"purchase order {', '.join(skipped)}" if skipped else "no such order"
            raise RPCError(
                NOTHING_TO_RECEIVE,
                f"Nothing to receive: {reason}; only orders sent to a supplier can be received",
                {"pks": pks},
            )
        units = 0
        for order in receivable:
            for line in order.lines.select_related("product"):
                _restock(line.product, line.quantity, f"received {order}", order)
                units += line.quantity
            order.status = PurchaseOrder.Status.RECEIVED
            order.received_at = timezone.now()
            order.save(update_fields=["status", "received_at"])
    summary = f"Received {len(receivable)} order(s), {units} unit(s) into stock"
    if skipped:
        summary += f"; skipped {', '.join(skipped)}"
    return {"received": [order.pk for order in receivable], "units": units, "summary": summary}
