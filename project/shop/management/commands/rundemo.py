"""``manage.py rundemo``: migrate, start the daemon, call the demo handlers, print the results."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from socketsvc import ServiceUnavailable, call
from socketsvc.conf import get_config

MANAGE = Path(settings.BASE_DIR) / "manage.py"
DEMO_SKU = "MUG-01"


class Command(BaseCommand):
    help = "Run the socketsvc demo: the daemon plus calls to the shop's handlers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="stop the daemon after the demo calls"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = get_config()
        Path(config.SOCKET).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
        call_command("migrate", verbosity=0)
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        self.stdout.write(f"database: {engine}; socket: {config.SOCKET}")

        daemon = subprocess.Popen([sys.executable, str(MANAGE), "runsocketservice"])
        try:
            self._wait_ready(daemon, config.SOCKET)
            self._show("shop.stock_report")
            mug = self._show("shop.product", sku=DEMO_SKU)
            if mug["stock"] > 1:
                self._show("shop.sell", sku=DEMO_SKU, quantity=mug["stock"] - 1)
            self._show("shop.restock_low_stock")
            self._show("shop.stock_report")
            if options["once"]:
                return
            self.stdout.write(
                "\nThe daemon is running. In another shell try:\n"
                "  .venv/bin/python manage.py socketctl call shop.restock sku=MUG-01 quantity=5\n"
                "  .venv/bin/python manage.py socketctl status\n"
                "Press Ctrl-C to stop."
            )
            daemon.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
        if daemon.returncode not in (0, -signal.SIGINT):
            raise CommandError(f"the daemon exited with status {daemon.returncode}")

    def _wait_ready(self, daemon: subprocess.Popen[bytes], socket: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise CommandError(f"the daemon exited with status {daemon.returncode}")
            try:
                call("rpc.ping", timeout=2)
            except ServiceUnavailable:
                time.sleep(0.1)
                continue
            return
        raise CommandError("the daemon did not answer within 30 s")

    def _show(self, method: str, **params: Any) -> Any:
        result = call(method, **params)
        shown = " ".join(f"{key}={value}" for key, value in params.items())
        self.stdout.write(f"\n$ socketctl call {method} {shown}\n{json.dumps(result, indent=2)}")
        return result
