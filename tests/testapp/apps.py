import os
from typing import Any

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Log the Tasks framework's signals as the daemon sends them (tests read the log);
        trace into memory with ``TEST_OTEL=1``."""
        import structlog

        from tests.testapp import otel

        otel.install()

        from socketsvc.tasks.compat import task_finished, task_started

        log = structlog.get_logger("testapp.signals")

        def seen(signal: str) -> Any:
            def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
                log.info(
                    "task_signal",
                    signal=signal,
                    sender=sender.__name__,
                    result_id=task_result.id,
                    status=str(task_result.status),
                )

            return receiver

        task_started.connect(seen("task_started"), weak=False)
        task_finished.connect(seen("task_finished"), weak=False)

        if os.environ.get("CAMPAIGN_BREAK"):  # a campaign's deliberately broken build
            from tests.campaign import breakage

            breakage.apply()
