"""A long-running loop that queries, idles past wait_timeout, and queries again.

Run as a script: ``python tests/harness/plain_loop.py IDLE_SECONDS [--lifecycle]``. It
prints one JSON line per query: {"ok": true} or {"ok": false, "code": N}
(the driver's code: a MySQL error number or a SQLSTATE).
Without ``--lifecycle`` this is what every naive management-command daemon
does; with it, each query runs inside socketsvc.db.lifecycle.request_scope().
"""

import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.db import DatabaseError, connection  # noqa: E402

from socketsvc.db.lifecycle import request_scope  # noqa: E402
from socketsvc.db.vendors import driver_code  # noqa: E402


def query() -> dict[str, object]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return {"ok": False, "code": driver_code(exc)}
    return {"ok": True}


def main() -> None:
    idle = float(sys.argv[1])
    scope = request_scope if "--lifecycle" in sys.argv else contextlib.nullcontext
    for attempt in range(3):
        if attempt == 1:
            time.sleep(idle)
        with scope():
            print(json.dumps(query()), flush=True)


if __name__ == "__main__":
    main()
