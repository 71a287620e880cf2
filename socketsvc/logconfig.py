"""structlog for the daemon: console lines on a TTY, JSON lines otherwise.

Django's own loggers and any other stdlib logger go through the same renderer,
so every line on stderr has one format.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class ReopenableFileHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Append to a file, and reopen it on demand (after logrotate moved it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self) -> IO[str]:
        return open(self.path, "a", buffering=1, encoding="utf-8")

    def reopen(self) -> None:
        """Close the file and open the path again."""
        self.acquire()
        try:
            old = self.setStream(self._open())
            if old is not None:
                old.close()
        finally:
            self.release()


class _HandlerStreamLogger:
    """A structlog logger that writes rendered lines straight to a handler's stream.

    It skips the second pass through stdlib logging (twice as fast per line)
    and shares the handler's lock, so its lines never interleave with those of
    stdlib loggers and follow the stream when the handler reopens its file.
    """

    def __init__(self, handler: logging.StreamHandler, name: str) -> None:  # type: ignore[type-arg]
        self._handler = handler
        self.name = name

    def msg(self, message: str) -> None:
        """Write one line."""
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(message + "\n")
            handler.stream.flush()
        finally:
            handler.release()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _add_logger_name(logger: Any, method_name: str, event_dict: Any) -> Any:
    event_dict["logger"] = getattr(logger, "name", None)
    return event_dict


def configure_logging(
    level: str = "INFO", log_file: str | None = None, json: bool | None = None
) -> logging.Handler:
    """Send structlog and stdlib logging to stderr (or *log_file*) in one format.

    JSON lines unless the stream is a terminal (then console lines). Return the handler.
    """
    handler: logging.StreamHandler  # type: ignore[type-arg]
    handler = ReopenableFileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    stream = handler.stream
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    pre_render: list[Any] = [structlog.processors.dict_tracebacks] if json else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            *pre_render,
            renderer,
        ],
        logger_factory=lambda name="socketsvc", *args: _HandlerStreamLogger(handler, name),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *pre_render,
            renderer,
        ],
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Django's "django" logger has its own console handler when DEBUG is on;
    # let its records reach the root handler instead, once.
    django_logger = logging.getLogger("django")
    django_logger.handlers = []
    django_logger.propagate = True
    return handler


def reopen_log_files() -> None:
    """Reopen every log file the root logger writes to (on SIGHUP)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()
