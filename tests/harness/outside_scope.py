"""A long-running loop of a user's own, outside any request_scope (python -m tests.harness.outside_scope).

``python -m tests.harness.outside_scope SECONDS refresh|plain``: query, pause SECONDS without
touching the database, then (``refresh``) call ``socketsvc.lifecycle.refresh_connections()``,
and query again. Prints ``ok`` or ``error <driver code>``. Run with the test settings and a
DATABASE_URL, as tests/db/test_faults.py does.
"""

from __future__ import annotations

import sys
import time

import django


def main() -> None:
    django.setup()
    from socketsvc.db import vendors
    from socketsvc.lifecycle import refresh_connections
    from tests.testapp.models import Note

    seconds, mode = float(sys.argv[1]), sys.argv[2]
    Note.objects.count()
    time.sleep(seconds)  # the pause past the server's idle timeout is what is tested
    if mode == "refresh":
        refresh_connections()
    try:
        Note.objects.count()
    except Exception as exc:
        print(f"error {vendors.driver_code(exc)}")
        return
    print("ok")


if __name__ == "__main__":
    main()
