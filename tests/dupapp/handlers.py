"""A handler whose name collides with testapp.add (installed only by the duplicate-name test)."""

from socketsvc import handler


@handler("testapp.add")
def add_again(a: int, b: int = 0) -> int:
    """Collide with testapp.add."""
    return a + b
