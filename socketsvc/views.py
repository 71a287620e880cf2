"""``/metrics`` in the project's own URLs: the daemon's Prometheus metrics, for a scraper.

Mount it where the scraper looks::

    from socketsvc.views import metrics
    urlpatterns += [path("metrics", metrics)]

A request is let through with ``Authorization: Bearer <METRICS_TOKEN>`` (when
``SOCKETSVC["METRICS_TOKEN"]`` is set), or from a logged-in user allowed to
view the dashboard (``socketsvc.view_activityrecord``); anyone else gets 401
(no credentials) or 403. The figures are the daemon's (``socketsvc.metrics``
over its socket): the whole service, every process; 503 says when the daemon
cannot be asked.
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from socketsvc.client import CallTimeout, ProtocolError, RemoteError, ServiceUnavailable, call_with
from socketsvc.conf import get_config

METHOD = "socketsvc.metrics"
try:
    from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
except ImportError:  # the web process needs no prometheus_client: the daemon renders
    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PERMISSION = "socketsvc.view_activityrecord"
TIMEOUT = 10.0


def _allowed(request: HttpRequest) -> bool | None:
    """Return True (let through), False (known, not allowed) or None (no credentials)."""
    token = get_config().METRICS_TOKEN
    sent = request.headers.get("Authorization", "")
    if sent.startswith("Bearer "):
        offered = sent.removeprefix("Bearer ").strip()
        return bool(token) and hmac.compare_digest(offered.encode(), str(token).encode())
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return bool(user.has_perm(PERMISSION))


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Return the daemon's metrics in the Prometheus text format (see the module)."""
    allowed = _allowed(request)
    if allowed is None:
        response = HttpResponse("401 Unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="socketsvc metrics"'
        return response
    if not allowed:
        return HttpResponse("403 Forbidden\n", status=403, content_type="text/plain")
    try:
        text = call_with(METHOD, None, timeout=TIMEOUT)
    except (ServiceUnavailable, CallTimeout, ProtocolError) as exc:
        return HttpResponse(
            f"503 the socketsvc daemon did not answer: {exc}\n",
            status=503,
            content_type="text/plain",
        )
    except RemoteError as exc:
        return HttpResponse(f"503 {exc.message}\n", status=503, content_type="text/plain")
    return HttpResponse(str(text), content_type=CONTENT_TYPE)
