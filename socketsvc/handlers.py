"""socketsvc's own handlers, found like any app's: ``socketsvc.metrics``."""

from __future__ import annotations

from socketsvc.methods.registry import handler
from socketsvc.observe import prom


@handler("socketsvc.metrics")
def metrics() -> str:
    """Return the whole service's Prometheus metrics in the text format (``socketctl
    metrics``); an error says so if this daemon keeps none (``METRICS``)."""
    body, _content_type = prom.exposition()
    return body.decode()
