"""socketsvc.admin: buttons and actions, their permissions and CSRF, and a message for every reply.

The admin runs in-process (Django's test client); the service it calls is a
real Unix socket answered by a scripted thread, so each failure the client can
meet is produced on the wire: errors, garbage, a hang, a closed connection.
"""

from __future__ import annotations

import re
import socket
import time
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.test import Client, RequestFactory
from django.urls import reverse

from project.shop.models import Product, PurchaseOrder
from socketsvc.admin import Action, Button, SocketServiceAdminMixin, describe_failure
from socketsvc.client import ServiceUnavailable
from tests.harness.scripted import CLOSE, HANG, error, result
from tests.harness.waiting import poll

pytestmark = pytest.mark.django_db


@pytest.fixture
def mug() -> Product:
    return Product.objects.get(sku="MUG-01")


def button_url(obj: Any, name: str) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_socketsvc", args=[obj.pk, name])


def change_url(obj: Any) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def shown(response) -> list[tuple[str, str]]:
    """Return the (level, text) of the messages the final page shows."""
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def staff_user(*permissions: str) -> User:
    user = User.objects.create_user("clerk", password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


# -- rendering -----------------------------------------------------------------


def test_change_form_renders_each_button_as_a_post_form_with_a_csrf_token(admin_client, mug):
    """Each button is a POST form to its own URL, with a CSRF token and data-socketsvc-method."""
    html = admin_client.get(change_url(mug)).content.decode()
    forms = re.findall(
        r'<form method="post" action="([^"]+)" class="socketsvc-button">(.*?)</form>', html, re.S
    )
    assert [action for action, _ in forms] == [
        button_url(mug, "shop_restock"),
        button_url(mug, "shop_sell"),
    ]
    for _, body in forms:
        assert 'name="csrfmiddlewaretoken"' in body
    assert re.findall(r'data-socketsvc-method="([^"]+)"', html) == ["shop.restock", "shop.sell"]
    assert ">Restock now</button>" in html


def test_add_form_shows_no_buttons(admin_client):
    """There is no object to act on while adding one, so no button is shown."""
    html = admin_client.get(reverse("admin:shop_product_add")).content.decode()
    assert "data-socketsvc-method" not in html


def test_changelist_marks_socketsvc_actions_with_their_method(admin_client):
    """The action menu's socketsvc options carry data-socketsvc-method; Django's own do not."""
    html = admin_client.get(reverse("admin:shop_product_changelist")).content.decode()
    options = dict(re.findall(r'<option value="(\w+)"([^>]*)>', html))
    assert options["shop_restock_products"] == ' data-socketsvc-method="shop.restock_products"'
    assert options["shop_order_products"] == ' data-socketsvc-method="shop.order_products"'
    assert options["delete_selected"] == ""


# -- refusals --------------------------------------------------------------------


def test_get_is_refused_and_calls_nothing(admin_client, service, mug):
    """A button URL answers GET with 405 Method Not Allowed, and the service hears nothing."""
    stub = service()
    response = admin_client.get(button_url(mug, "shop_restock"))
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert stub.requests == []


def test_user_without_the_permission_sees_no_button_and_is_refused(client, service, mug):
    """A staff user who may only view products gets no buttons, and a POST is 403."""
    stub = service()
    client.force_login(staff_user("view_product"))
    page = client.get(change_url(mug))
    assert page.status_code == 200
    assert "data-socketsvc-method" not in page.content.decode()
    assert client.post(button_url(mug, "shop_restock")).status_code == 403
    assert stub.requests == []


def test_anonymous_user_is_sent_to_the_login_page(client, service, mug):
    """The button URL sits behind admin_site.admin_view: no login, no call."""
    stub = service()
    response = client.post(button_url(mug, "shop_restock"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert stub.requests == []


def test_csrf_token_is_enforced(admin_user, service, mug):
    """Without the CSRF token the POST is 403 and nothing is called; with it, the call is made."""
    stub = service(result({"sku": "MUG-01", "added": 24, "stock": 27}))
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    assert browser.post(button_url(mug, "shop_restock")).status_code == 403
    assert stub.requests == []

    page = browser.get(change_url(mug)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = browser.post(button_url(mug, "shop_restock"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert [r["method"] for r in stub.requests] == ["shop.restock"]


def test_missing_object_is_a_warning_not_a_call(admin_client, service):
    """A button pressed for a deleted object warns and goes back to the changelist."""
    stub = service()
    response = admin_client.post(
        reverse("admin:shop_product_socketsvc", args=[999999, "shop_restock"]), follow=True
    )
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("admin:shop_product_changelist")
    [(level, text)] = shown(response)
    assert level == "warning"
    assert "does not exist" in text
    assert stub.requests == []


def test_changelist_filters_survive_the_round_trip(admin_client, service, mug):
    """A button pressed on a filtered object's page comes back with the changelist filters kept."""
    service(result("ok"))
    filters = "_changelist_filters=supplier__id__exact%3D1"
    page = admin_client.get(f"{change_url(mug)}?{filters}").content.decode()
    assert f'action="{button_url(mug, "shop_restock")}?{filters}"' in page
    response = admin_client.post(f"{button_url(mug, 'shop_restock')}?{filters}")
    assert response["Location"] == f"{change_url(mug)}?{filters}"


# -- replies become messages -----------------------------------------------------


def test_success_shows_the_handlers_summary_on_the_change_form(admin_client, service, mug):
    """The params come from the object, and a result's "summary" becomes a success message."""
    stub = service(result({"sku": "MUG-01", "summary": "Restocked MUG-01 by 24"}))
    response = admin_client.post(button_url(mug, "shop_restock"), follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(change_url(mug), 302)]
    assert shown(response) == [("success", "Restock now: Restocked MUG-01 by 24")]
    [request] = stub.requests
    assert request["method"] == "shop.restock"
    assert request["params"] == {"sku": "MUG-01"}
    assert "id" in request


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"sku": "MUG-01", "added": 24, "stock": 27}, "sku MUG-01, added 24, stock 27"),
        (None, "done"),
        ("ok", "ok"),
        ([1, 2], "[1, 2]"),
        ({"items": [{"sku": "A"}]}, '{"items": [{"sku": "A"}]}'),
    ],
)
def test_success_without_summary_shows_a_short_rendering(admin_client, service, mug, value, text):
    """Without a summary, the result itself is shown, briefly."""
    service(result(value))
    response = admin_client.post(button_url(mug, "shop_restock"), follow=True)
    assert shown(response) == [("success", f"Restock now: {text}")]


FAILURES = {
    "handler error": (
        error(
            -32000,
            "ValueError: quantity must be positive",
            {"type": "ValueError", "message": "quantity must be positive"},
        ),
        "the job failed with ValueError: quantity must be positive",
    ),
    "database unavailable": (
        error(-32001, "Database unavailable", {"db_code": 2002}),
        "the background service cannot reach its database right now; try again later.",
    ),
    "busy": (
        error(-32002, "Server busy"),
        "the background service is busy; try again in a moment.",
    ),
    "shutting down": (
        error(-32004, "Shutting down"),
        "the background service is shutting down; try again in a moment.",
    ),
    "invalid params": (
        error(-32602, "Invalid params: missing required parameter 'sku'"),
        "the service refused its params: Invalid params: missing required parameter 'sku'",
    ),
    "method not found": (
        error(-32601, "Method not found: shop.restock"),
        "the background service has no handler 'shop.restock'; is its app installed, and has "
        "the service been restarted since it was added?",
    ),
    "refused by the handler": (
        error(1001, "No product with SKU 'MUG-01'", {"sku": "MUG-01"}),
        "the request was refused: No product with SKU 'MUG-01'",
    ),
    "not JSON": (
        lambda request: b"<html>500</html>\n",
        "the background service sent a reply that could not be understood.",
    ),
    "connection closed": (
        lambda request: CLOSE,
        "the connection to the background service was lost before it replied; the job may or "
        "may not have run. Check before trying again.",
    ),
}


@pytest.mark.parametrize("case", FAILURES, ids=list(FAILURES))
def test_each_failure_is_a_clear_error_message_on_a_200_page(admin_client, service, mug, case):
    """Every error reply becomes a human error message on the change form; no 500, no traceback."""
    reply, text = FAILURES[case]
    service(reply)
    response = admin_client.post(button_url(mug, "shop_restock"), follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(change_url(mug), 302)]
    assert shown(response) == [("error", f"Restock now: {text}")]
    assert "Traceback" not in response.content.decode()


NOT_RUNNING = (
    "Restock now: the background service is not running. Start it (manage.py runsocketservice) "
    "and try again."
)


def test_no_socket_means_service_not_running(admin_client, service, mug):
    """With no socket file the user is told the service is not running."""
    response = admin_client.post(button_url(mug, "shop_restock"), follow=True)
    assert response.status_code == 200
    assert shown(response) == [("error", NOT_RUNNING)]


def test_socket_nobody_listens_on_means_service_not_running(admin_client, service, sock_path, mug):
    """A socket file left by a dead daemon (connection refused) reads the same to the user."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(sock_path)
        response = admin_client.post(button_url(mug, "shop_restock"), follow=True)
    assert response.status_code == 200
    assert shown(response) == [("error", NOT_RUNNING)]


def test_a_hanging_service_costs_the_page_only_the_call_timeout(admin_client, service, mug):
    """A service that accepts and never answers: the page is back after CALL_TIMEOUT, with an error."""
    stub = service(lambda request: HANG, timeout=0.5)
    started = time.monotonic()
    response = admin_client.post(button_url(mug, "shop_restock"), follow=True)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3
    assert response.status_code == 200
    assert shown(response) == [
        (
            "error",
            "Restock now: no reply from the background service within 0.5 s. The job may still "
            "be running; check its effect before trying again.",
        )
    ]
    assert len(stub.requests) == 1


def test_permission_denied_on_the_socket_says_whom_to_fix():
    """A socket the web server may not open is explained as a permission problem, not a crash."""
    exc = ServiceUnavailable("no permission", "/run/x.sock", "permission_denied")
    assert describe_failure(exc, "shop.restock", 5) == (
        "the web server may not connect to the background service's socket; give its user "
        "write access to the socket (the socket's group)."
    )


# -- notifications ----------------------------------------------------------------


def test_notify_button_sends_a_notification_and_says_it_runs_in_the_background(
    admin_client, service
):
    """A fire-and-forget button sends no id, waits for nothing, and its message says so."""
    stub = service(lambda request: HANG)
    order = PurchaseOrder.objects.get()
    started = time.monotonic()
    response = admin_client.post(button_url(order, "shop_send_order"), follow=True)
    assert time.monotonic() - started < 3
    assert shown(response) == [
        (
            "success",
            "Send to supplier: sent to the background service, which runs it on its own. Its "
            "result is not shown here; reload later to see its effect.",
        )
    ]
    [request] = poll(lambda: stub.requests)
    assert request == {"jsonrpc": "2.0", "method": "shop.send_order", "params": {"pk": order.pk}}


class ParamNamesAdmin(SocketServiceAdminMixin, admin.ModelAdmin):
    socketsvc_buttons = [
        Button(
            "shop.tune",
            "Tune",
            params=lambda product: {"timeout": 7, "socket": "kept"},
            notify=True,
        ),
        Button("shop.tune", "Tune now", params=lambda product: {"timeout": 7}, name="now"),
    ]


@pytest.mark.parametrize("name", ["shop_tune", "now"], ids=["notify", "call"])
def test_params_named_like_client_options_travel_as_params(admin_user, service, mug, name):
    """Params named "timeout" or "socket" reach the handler; they never become client options."""
    stub = service(result(None))
    model_admin = ParamNamesAdmin(Product, admin.AdminSite(name="paramnames"))
    response, messages = press(model_admin, admin_user, mug, name)
    assert response.status_code == 302
    assert messages[0][0] == "success"
    [request] = poll(lambda: stub.requests)
    assert request["params"]["timeout"] == 7


def test_notify_button_reports_a_service_that_is_not_running(admin_client, service):
    """A notification that cannot be delivered is an error, not a false "sent"."""
    order = PurchaseOrder.objects.get()
    response = admin_client.post(button_url(order, "shop_send_order"), follow=True)
    assert shown(response) == [("error", NOT_RUNNING.replace("Restock now", "Send to supplier"))]


# -- changelist actions -------------------------------------------------------------


def select(action: str, *objects: Any) -> dict[str, Any]:
    return {"action": action, "_selected_action": [o.pk for o in objects], "index": 0}


def test_changelist_action_calls_once_for_the_selected_rows(admin_client, service):
    """An action sends one call with params built from the selected rows, and shows the summary."""
    stub = service(result({"summary": "Restocked 2 product(s)"}))
    chosen = Product.objects.filter(sku__in=["PEN-03", "MUG-01"])
    url = reverse("admin:shop_product_changelist")
    response = admin_client.post(url, select("shop_restock_products", *chosen), follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(url, 302)]
    assert shown(response) == [("success", "Restock selected products: Restocked 2 product(s)")]
    [request] = stub.requests
    assert request["method"] == "shop.restock_products"
    assert sorted(request["params"]["skus"]) == ["MUG-01", "PEN-03"]


def test_action_params_default_to_the_selected_pks(admin_client, service):
    """An Action without params sends {"pks": [...]}."""
    stub = service(result({"summary": "Received 1 order(s)"}))
    order = PurchaseOrder.objects.get()
    url = reverse("admin:shop_purchaseorder_changelist")
    response = admin_client.post(url, select("shop_receive_orders", order), follow=True)
    assert shown(response) == [("success", "Receive selected orders: Received 1 order(s)")]
    assert stub.requests[0]["params"] == {"pks": [order.pk]}


def test_action_failure_is_an_error_message_on_the_changelist(admin_client, service):
    """An action meeting a stopped service shows the same clear error, on a 200 changelist."""
    url = reverse("admin:shop_product_changelist")
    response = admin_client.post(
        url, select("shop_restock_products", Product.objects.first()), follow=True
    )
    assert response.status_code == 200
    assert shown(response) == [
        ("error", NOT_RUNNING.replace("Restock now", "Restock selected products"))
    ]


def test_action_is_neither_offered_nor_run_without_its_permission(client, service):
    """A user who may delete but not change products lacks the action; posting it calls nothing."""
    stub = service()
    client.force_login(staff_user("view_product", "delete_product"))
    url = reverse("admin:shop_product_changelist")
    assert "shop_restock_products" not in client.get(url).content.decode()
    response = client.post(
        url, select("shop_restock_products", Product.objects.first()), follow=True
    )
    assert response.status_code == 200
    assert shown(response) == [("warning", "No action selected.")]
    assert stub.requests == []


# -- declarations -----------------------------------------------------------------


class TimedProductAdmin(SocketServiceAdminMixin, admin.ModelAdmin):
    socketsvc_buttons = [
        Button(
            "shop.price",
            "Reprice",
            params=lambda product: {"sku": product.sku, "price": Decimal("9.50")},
            timeout=0.3,
        ),
        Button("shop.audit", "Audit", permission="delete"),
    ]


def press(model_admin: SocketServiceAdminMixin, user: User, obj: Any, name: str):
    request = RequestFactory().post("/")
    request.user = user
    request.session = {}
    request._messages = FallbackStorage(request)
    response = model_admin.socketsvc_button_view(request, str(obj.pk), name)
    return response, [(m.level_tag, m.message) for m in request._messages]


def test_a_buttons_own_timeout_bounds_the_call_and_params_become_json(admin_user, service, mug):
    """Button(timeout=) overrides CALL_TIMEOUT, and Decimal params travel as JSON strings."""
    stub = service(lambda request: HANG, timeout=30)
    model_admin = TimedProductAdmin(Product, admin.AdminSite(name="timed"))
    started = time.monotonic()
    response, messages = press(model_admin, admin_user, mug, "shop_price")
    assert time.monotonic() - started < 3
    assert response.status_code == 302
    assert messages == [
        (
            "error",
            "Reprice: no reply from the background service within 0.3 s. The job may still be "
            "running; check its effect before trying again.",
        )
    ]
    assert stub.requests[0]["params"] == {"sku": "MUG-01", "price": "9.50"}


def test_a_button_declares_which_permission_it_needs(service, mug):
    """permission="delete" is checked with has_delete_permission, against the object."""
    stub = service(result("audited"))
    model_admin = TimedProductAdmin(Product, admin.AdminSite(name="timed"))
    clerk = staff_user("view_product", "change_product")
    with pytest.raises(PermissionDenied):
        press(model_admin, clerk, mug, "shop_audit")
    assert stub.requests == []
    clerk.user_permissions.add(Permission.objects.get(codename="delete_product"))
    clerk = User.objects.get(pk=clerk.pk)  # drop the cached permissions
    _, messages = press(model_admin, clerk, mug, "shop_audit")
    assert messages == [("success", "Audit: audited")]


@pytest.mark.parametrize(
    ("declarations", "problem"),
    [
        (
            {"socketsvc_buttons": [Button("shop.a", "A"), Button("shop.a", "A again")]},
            "two entries are named 'shop_a'; give one a distinct name=",
        ),
        (
            {"socketsvc_actions": [Action("shop.a", "A", permission="publish")]},
            "'shop_a' needs permission 'publish', but Broken has no has_publish_permission() method",
        ),
        (
            {"socketsvc_buttons": [Button("shop.a", "A", name="not a name")]},
            "name 'not a name' must be letters, digits and underscores",
        ),
    ],
)
def test_declaration_mistakes_fail_when_the_admin_class_is_defined(declarations, problem):
    """A duplicate name, an unknown permission or a bad name is an error naming the fix."""
    with pytest.raises(ImproperlyConfigured, match=re.escape(problem)):
        type("Broken", (SocketServiceAdminMixin, admin.ModelAdmin), declarations)


def test_a_mixin_of_mixins_is_checked_where_it_becomes_a_model_admin():
    """Declarations on a mixin without ModelAdmin are checked in the ModelAdmin that uses it."""
    shared = type(
        "Shared",
        (SocketServiceAdminMixin,),
        {"socketsvc_actions": [Action("shop.a", "A", permission="publish")]},
    )
    with pytest.raises(ImproperlyConfigured, match="has no has_publish_permission"):
        type("Concrete", (shared, admin.ModelAdmin), {})
