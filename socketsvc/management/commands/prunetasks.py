"""``manage.py prunetasks --older-than 14d``: delete finished task results older than an age."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from socketsvc.tasks import store
from socketsvc.tasks.compat import task_backends

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_age(text: str) -> timedelta:
    """Return ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds as a timedelta."""
    match = _AGE.match(text)
    if match is None:
        raise CommandError(f"--older-than {text!r}: give a number with s, m, h, d or w (e.g. 14d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


class Command(BaseCommand):
    help = (
        "Delete SUCCESSFUL and FAILED task results that finished more than --older-than ago. "
        "(SOCKETSVC['TASK_RETENTION'] makes the daemon do this by itself.)"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, help="an age: 30d, 12h, 90m, 45s, 2w")
        parser.add_argument(
            "--backend", default="default", help="the TASKS alias (default: default)"
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        age = parse_age(options["older_than"])
        shown = options["older_than"]  # as given: "14d", not "14 days, 0:00:00"
        database = getattr(task_backends[options["backend"]], "database", None)
        if not isinstance(database, str):
            raise CommandError(f"TASKS[{options['backend']!r}] is not a socketsvc backend")
        if options["dry_run"]:
            count = store.prune(age, database, dry_run=True)
            self.stdout.write(
                f"{count} finished task result(s) older than {shown} would be deleted"
            )
            return
        deleted = store.prune(age, database)
        self.stdout.write(f"deleted {deleted} finished task result(s) older than {shown}")
