"""``manage.py socketctl``: talk to a running socketsvc; print JSON.

Exit status: 0 ok, 1 the service answered with an error, 2 unreachable.
``socketctl schedules`` reads the code and the database, not the daemon;
``socketctl metrics`` prints the Prometheus text format.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from socketsvc.client import (
    CallTimeout,
    ProtocolError,
    RemoteError,
    ServiceUnavailable,
    call_with,
)

METRICS_METHOD = "socketsvc.metrics"
EXIT_REMOTE_ERROR = 1
EXIT_UNREACHABLE = 2


def _parse_params(values: list[str]) -> list[Any] | dict[str, Any]:
    """Accept one JSON array/object, or ``key=value`` pairs (values parsed as JSON if they can)."""
    if len(values) == 1 and values[0].lstrip()[:1] in ("[", "{"):
        try:
            parsed = json.loads(values[0])
        except ValueError as exc:
            raise CommandError(f"params are not valid JSON: {exc}") from None
        if not isinstance(parsed, list | dict):
            raise CommandError("params must be a JSON array or object")
        return parsed
    named: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CommandError(f"expected key=value or one JSON array/object, got {item!r}")
        try:
            named[key] = json.loads(raw)
        except ValueError:
            named[key] = raw
    return named


class Command(BaseCommand):
    help = (
        "Call a socketsvc method, or ping it, show its status, list its methods, print its metrics."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--socket", help="socket path (default: SOCKETSVC['SOCKET'])")
        parser.add_argument("--timeout", type=float, help="seconds to wait for the reply")
        sub = parser.add_subparsers(dest="action", required=True)
        call_parser = sub.add_parser("call", help="call METHOD with params")
        call_parser.add_argument("method")
        call_parser.add_argument(
            "params", nargs="*", default=[], help="key=value ... or one JSON array/object"
        )
        for action in ("ping", "status", "methods"):
            sub.add_parser(action, help=f"call rpc.{action}")
        sub.add_parser(
            "schedules", help="list the periodic schedules: next run, last run, paused or not"
        )
        sub.add_parser(
            "metrics", help="print the service's Prometheus metrics (the text format, not JSON)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "schedules":
            from socketsvc.tasks.listing import list_schedules

            self.stdout.write(json.dumps(list_schedules(), indent=2, ensure_ascii=False))
            return
        if action == "call":
            method, params = options["method"], _parse_params(options["params"])
        elif action == "metrics":
            method, params = METRICS_METHOD, None
        else:
            method, params = f"rpc.{action}", None
        try:
            result = call_with(method, params, timeout=options["timeout"], socket=options["socket"])
        except RemoteError as exc:
            error = {"code": exc.code, "message": exc.message, "data": exc.data}
            self.stdout.write(json.dumps({"error": error}, indent=2))
            raise CommandError(exc.message, returncode=EXIT_REMOTE_ERROR) from None
        except (ServiceUnavailable, CallTimeout, ProtocolError) as exc:
            self.stdout.write(json.dumps({"error": {"message": str(exc)}}, indent=2))
            raise CommandError(str(exc), returncode=EXIT_UNREACHABLE) from None
        if action == "metrics" and isinstance(result, str):
            self.stdout.write(result, ending="")
        else:
            self.stdout.write(json.dumps(result, indent=2, ensure_ascii=False))
        sys.stdout.flush()
