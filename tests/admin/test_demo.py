"""The demo shop's admin buttons against a real daemon: the handlers' ORM work, and their refusals.

The admin runs in-process on the test database; the daemon serves a migrated
copy of the same demo data, so the same objects (same pks) exist on both sides
and the test reads the daemon's database to see what the handlers wrote.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from django.urls import reverse

from project.shop.models import Product, PurchaseOrder
from tests.harness.waiting import poll

pytestmark = pytest.mark.django_db


class DaemonDatabase:
    def __init__(self, database_url: str) -> None:
        self.path = database_url.removeprefix("sqlite:///")

    def one(self, sql: str, *args: object) -> tuple:
        with sqlite3.connect(self.path) as db:
            return db.execute(sql, args).fetchone()

    def stock(self, sku: str) -> int:
        return self.one("SELECT stock FROM shop_product WHERE sku = ?", sku)[0]


@pytest.fixture
def shop(sqlite_url, start_daemon, short_tmp, settings):
    """A daemon on a migrated copy of the demo data; the in-process admin calls it."""
    daemon = start_daemon(sqlite_url, env={"SOCKETSVC_VAR_DIR": str(short_tmp)})
    settings.SOCKETSVC = {"SOCKET": daemon.socket, "CALL_TIMEOUT": 20.0}
    return DaemonDatabase(sqlite_url)


def press(client, obj, name: str):
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_socketsvc", args=[obj.pk, name])
    response = client.post(url, follow=True)
    assert response.status_code == 200
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def run_action(client, model: type, action: str, *objects):
    url = reverse(f"admin:shop_{model._meta.model_name}_changelist")
    data = {"action": action, "_selected_action": [o.pk for o in objects], "index": 0}
    response = client.post(url, data, follow=True)
    assert response.status_code == 200
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def test_restock_button_adds_stock_and_a_movement_in_the_daemons_database(admin_client, shop):
    """ "Restock now" reaches shop.restock, which writes the product and a stock movement."""
    mug = Product.objects.get(sku="MUG-01")
    assert press(admin_client, mug, "shop_restock") == [
        ("success", "Restock now: sku MUG-01, added 24, stock 27")
    ]
    assert shop.stock("MUG-01") == 27
    assert shop.one(
        "SELECT change, reason FROM shop_stockmovement WHERE product_id = ? ORDER BY id DESC",
        mug.pk,
    ) == (24, "manual restock")


def test_a_sale_the_handler_refuses_shows_its_reason(admin_client, shop):
    """Selling a product with no stock is refused by the handler, and the admin says why."""
    pen = Product.objects.get(sku="PEN-03")
    assert press(admin_client, pen, "shop_sell") == [
        (
            "error",
            "Record a sale: the request was refused: Only 0 of PEN-03 in stock, cannot sell 1",
        )
    ]
    assert shop.stock("PEN-03") == 0


def test_receive_delivery_books_the_order_into_stock_once(admin_client, shop):
    """Receiving the sent order adds its lines to stock and marks it received; a second press is refused."""
    order = PurchaseOrder.objects.get()
    assert press(admin_client, order, "shop_receive_orders") == [
        ("success", "Receive delivery: Received 1 order(s), 35 unit(s) into stock")
    ]
    assert (shop.stock("PEN-03"), shop.stock("NB-04")) == (10, 37)
    assert shop.one("SELECT status FROM shop_purchaseorder WHERE id = ?", order.pk) == ("received",)

    assert press(admin_client, order, "shop_receive_orders") == [
        (
            "error",
            f"Receive delivery: the request was refused: Nothing to receive: purchase order "
            f"#{order.pk} (received); only orders sent to a supplier can be received",
        )
    ]
    assert (shop.stock("PEN-03"), shop.stock("NB-04")) == (10, 37)


def test_ordering_then_sending_in_the_background(admin_client, shop, short_tmp):
    """The order action drafts a purchase order per supplier; the notify button sends one."""
    chosen = Product.objects.filter(sku__in=["MUG-01", "LAMP-05", "PEN-03"])
    [(level, text)] = run_action(admin_client, Product, "shop_order_products", *chosen)
    assert level == "success"
    assert text.startswith(
        "Order selected products from their suppliers: 3 draft purchase order(s)"
    )
    assert shop.one("SELECT count(*) FROM shop_purchaseorder WHERE status = 'draft'") == (3,)
    assert shop.one(
        "SELECT sum(quantity) FROM shop_purchaseorderline l JOIN shop_purchaseorder o"
        " ON o.id = l.order_id WHERE o.status = 'draft'"
    ) == (40,)

    # The admin's database mirrors the daemon's first new order, so its button can be pressed.
    draft_pk = shop.one("SELECT min(id) FROM shop_purchaseorder WHERE status = 'draft'")[0]
    draft = PurchaseOrder.objects.create(pk=draft_pk, supplier_id=1)
    [(level, text)] = press(admin_client, draft, "shop_send_order")
    assert (level, text.split(":")[0]) == ("success", "Send to supplier")
    assert "runs it on its own" in text
    poll(
        lambda: (
            shop.one("SELECT status FROM shop_purchaseorder WHERE id = ?", draft_pk) == ("sent",)
        )
    )
    document = Path(short_tmp) / "outbox" / f"purchase-order-{draft_pk}.txt"
    assert "Subject: Purchase order" in document.read_text()


@pytest.mark.parametrize("model", ["supplier", "product", "purchaseorder", "stockmovement"])
def test_every_demo_admin_page_renders(admin_client, model):
    """The demo's changelists and change forms render from the migrated demo data."""
    changelist = admin_client.get(reverse(f"admin:shop_{model}_changelist"))
    assert changelist.status_code == 200
    first = changelist.context["cl"].result_list[0]
    assert (
        admin_client.get(reverse(f"admin:shop_{model}_change", args=[first.pk])).status_code == 200
    )


@pytest.mark.mariadb
def test_button_works_the_morning_after_the_daemon_idled_past_wait_timeout(
    admin_client, private_mariadb, start_daemon, settings
):
    """On MariaDB, a button pressed after the daemon's connection idled out still succeeds."""
    private_mariadb.set_wait_timeout(1)
    daemon = start_daemon(private_mariadb.url(), conn_max_age="none")
    settings.SOCKETSVC = {"SOCKET": daemon.socket, "CALL_TIMEOUT": 20.0}
    mug = Product.objects.get(sku="MUG-01")
    assert press(admin_client, mug, "shop_restock") == [
        ("success", "Restock now: sku MUG-01, added 24, stock 27")
    ]
    assert private_mariadb.sessions(), "the daemon keeps its connection (CONN_MAX_AGE=None)"

    poll(lambda: not private_mariadb.sessions(), timeout=30, interval=0.2)

    assert press(admin_client, mug, "shop_restock") == [
        ("success", "Restock now: sku MUG-01, added 24, stock 51")
    ]
    assert daemon.call("rpc.status")["errors"] == 0
