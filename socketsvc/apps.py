"""Django app config for socketsvc."""

from django.apps import AppConfig


class SocketSvcConfig(AppConfig):
    name = "socketsvc"
    verbose_name = "Socket service"

    def ready(self) -> None:
        """Connect the database lifecycle's receivers, register the system checks, give tasks
        ``with_args()``."""
        from django.core.signals import setting_changed
        from django.db.backends.signals import connection_created

        from socketsvc import checks  # noqa: F401  (registers them)
        from socketsvc.db import lifecycle, liveness
        from socketsvc.tasks.workflows.canvas import install_with_args

        install_with_args()  # task.with_args(...): a workflow's step

        connection_created.connect(liveness.guard_connection, dispatch_uid="socketsvc.guard")
        connection_created.connect(lifecycle.count_connect, dispatch_uid="socketsvc.connects")
        setting_changed.connect(lifecycle.forget_cache_backends, dispatch_uid="socketsvc.caches")
