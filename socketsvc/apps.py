"""Django app config for socketsvc."""

from django.apps import AppConfig


class SocketSvcConfig(AppConfig):
    name = "socketsvc"
    verbose_name = "Socket service"

    def ready(self) -> None:
        """Register the system checks (a bad SOCKETSVC setting is reported as socketsvc.E001)."""
        from . import checks  # noqa: F401
