"""The unit of work every server runs: one row by primary key through the ORM, one field back."""

from project.shop.models import Product
from socketsvc import handler


@handler
def lookup(pk: int) -> str:
    """Return the name of the product with primary key *pk*."""
    return Product.objects.get(pk=pk).name
