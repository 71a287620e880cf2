"""The Django view that gunicorn serves: the same lookup as the ``bench.lookup`` handler."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from bench.handlers import lookup


def lookup_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Answer the product's name as plain text."""
    return HttpResponse(lookup(pk), content_type="text/plain; charset=utf-8")


urlpatterns = [path("lookup/<int:pk>", lookup_view)]
