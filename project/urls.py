"""URLs of the demo project: the Django admin, and the daemon's metrics for Prometheus."""

from django.contrib import admin
from django.urls import path

from socketsvc.views import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics),
]
