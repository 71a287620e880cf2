"""The examples of docs/testing.md, which includes them from this file: both stay one.

They test the demo shop's handler ``shop.sell`` and its task ``stock_count`` the way
a project tests its own, with the helpers of ``socketsvc.testing``.
"""

from __future__ import annotations

import pytest
from django.test import TestCase, TransactionTestCase

from project.shop.models import Product
from project.shop.tasks import stock_count
from socketsvc import InvalidParams, RemoteError, call
from socketsvc.testing import InProcessMixin, LiveServiceMixin

# -- pytest, in process: fast, and the handlers see the test's own data --------------


@pytest.mark.django_db
def test_a_sale_takes_units_out_of_stock(socketsvc_in_process):
    Product.objects.create(sku="CUP-99", name="Cup", stock=5)

    assert call("shop.sell", sku="CUP-99", quantity=2)["stock"] == 3
    assert Product.objects.get(sku="CUP-99").stock == 3


@pytest.mark.django_db
def test_a_sale_beyond_the_stock_is_refused(socketsvc_in_process):
    Product.objects.create(sku="CUP-99", name="Cup", stock=1)

    with pytest.raises(RemoteError) as refused:
        call("shop.sell", sku="CUP-99", quantity=2)
    assert refused.value.data == {"sku": "CUP-99", "stock": 1}
    with pytest.raises(InvalidParams):
        call("shop.sell", sku="CUP-99", amount=2)  # the handler takes "quantity"


@pytest.mark.django_db
def test_a_stock_count_task_reports_the_units(socketsvc_in_process):
    Product.objects.create(sku="CUP-99", name="Cup", stock=5)
    result = stock_count.enqueue(skus=["CUP-99"], seconds_per_product=0)

    socketsvc_in_process.run_tasks()

    result.refresh()
    assert result.return_value["units"] == 5


# -- pytest, live: a real runsocketservice on the test database ----------------------


def test_the_service_sells_from_committed_stock(socketsvc_live):
    Product.objects.create(sku="CUP-99", name="Cup", stock=5)

    assert call("shop.sell", sku="CUP-99")["stock"] == 4


# -- Django test cases ----------------------------------------------------------------


class SaleTests(InProcessMixin, TestCase):
    def test_a_sale_takes_units_out_of_stock(self):
        Product.objects.create(sku="CUP-99", name="Cup", stock=5)

        self.assertEqual(call("shop.sell", sku="CUP-99", quantity=2)["stock"], 3)


class LiveStockCountTests(LiveServiceMixin, TransactionTestCase):
    socketsvc_args = ("--workers", "2", "--task-workers", "1")

    def test_the_service_runs_a_stock_count(self):
        Product.objects.create(sku="CUP-99", name="Cup", stock=5)
        result = stock_count.enqueue(skus=["CUP-99"], seconds_per_product=0)

        self.socketsvc.wait_for_task(result)  # refreshed until finished (10 s at most)
        self.assertEqual(result.return_value["units"], 5)
