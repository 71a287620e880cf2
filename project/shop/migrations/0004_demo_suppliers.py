"""Demo data: suppliers for the demo products, their opening stock, and one order on its way."""

from django.db import migrations
from django.utils import timezone

SUPPLIERS = [
    ("Potter & Co", "orders@potter.example", 5, ["MUG-01"]),
    ("Leaf & Kettle", "trade@leafkettle.example", 2, ["TEA-02"]),
    ("Ink Works", "sales@inkworks.example", 4, ["PEN-03", "NB-04"]),
    ("Brightside Lighting", "orders@brightside.example", 7, ["LAMP-05"]),
]
ORDER_ON_ITS_WAY = ("Ink Works", [("PEN-03", 10), ("NB-04", 25)])


def add_suppliers(apps, schema_editor):
    Supplier = apps.get_model("shop", "Supplier")
    Product = apps.get_model("shop", "Product")
    StockMovement = apps.get_model("shop", "StockMovement")
    PurchaseOrder = apps.get_model("shop", "PurchaseOrder")
    PurchaseOrderLine = apps.get_model("shop", "PurchaseOrderLine")
    for name, email, lead_time, skus in SUPPLIERS:
        supplier, _ = Supplier.objects.get_or_create(
            name=name, defaults={"email": email, "lead_time_days": lead_time}
        )
        Product.objects.filter(sku__in=skus, supplier=None).update(supplier=supplier)
    for product in Product.objects.filter(stock__gt=0, movements=None):
        StockMovement.objects.create(product=product, change=product.stock, reason="opening stock")
    name, lines = ORDER_ON_ITS_WAY
    supplier = Supplier.objects.get(name=name)
    if not PurchaseOrder.objects.filter(supplier=supplier).exists():
        order = PurchaseOrder.objects.create(
            supplier=supplier, status="sent", sent_at=timezone.now()
        )
        for sku, quantity in lines:
            product = Product.objects.filter(sku=sku).first()
            if product is not None:
                PurchaseOrderLine.objects.create(order=order, product=product, quantity=quantity)


def remove_suppliers(apps, schema_editor):
    names = [supplier[0] for supplier in SUPPLIERS]
    apps.get_model("shop", "StockMovement").objects.filter(reason="opening stock").delete()
    apps.get_model("shop", "PurchaseOrder").objects.filter(supplier__name__in=names).delete()
    apps.get_model("shop", "Product").objects.filter(supplier__name__in=names).update(supplier=None)
    apps.get_model("shop", "Supplier").objects.filter(name__in=names).delete()


class Migration(migrations.Migration):
    dependencies = [("shop", "0003_suppliers_and_purchase_orders")]
    operations = [migrations.RunPython(add_suppliers, remove_suppliers)]
