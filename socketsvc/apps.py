"""Django app config for socketsvc."""

from django.apps import AppConfig


class SocketSvcConfig(AppConfig):
    name = "socketsvc"
    verbose_name = "Socket service"

    def ready(self) -> None:
        """Validate SOCKETSVC early, so a bad setting fails every command, not just the daemon."""
        from .conf import get_config

        get_config()
