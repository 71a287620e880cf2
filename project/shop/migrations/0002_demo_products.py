"""Demo data: a few products, some of them low on stock."""

from django.db import migrations

PRODUCTS = [
    ("MUG-01", "Stoneware mug", 3, 5, 24),
    ("TEA-02", "Assam tea, 250 g", 40, 10, 30),
    ("PEN-03", "Fountain pen", 0, 2, 10),
    ("NB-04", "Dotted notebook A5", 12, 8, 25),
    ("LAMP-05", "Desk lamp", 2, 2, 6),
]


def add_products(apps, schema_editor):
    Product = apps.get_model("shop", "Product")
    for sku, name, stock, level, quantity in PRODUCTS:
        Product.objects.get_or_create(
            sku=sku,
            defaults={
                "name": name,
                "stock": stock,
                "reorder_level": level,
                "reorder_quantity": quantity,
            },
        )


def remove_products(apps, schema_editor):
    apps.get_model("shop", "Product").objects.filter(sku__in=[p[0] for p in PRODUCTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [migrations.RunPython(add_products, remove_products)]
