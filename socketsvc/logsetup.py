"""structlog for the daemon, inside the project's own stdlib logging.

Console lines on a terminal, JSON lines otherwise, on stderr or ``--log-file``:
the daemon adds one handler, its own, to the root logger. The project's
``LOGGING`` stays in force: every handler it configured (``mail_admins``, a
file, Sentry's logging integration) sees the daemon's records, a failing
handler's exception with its traceback included. Only a project handler that
writes to the very console stream the daemon writes to is removed, so no line
is printed twice.

structlog events become stdlib records and go through the logger hierarchy,
unless the daemon's handler is the only one that would see them: then the
line is rendered and written straight to its stream (the same bytes, half the
cost), which is what a daemon without extra handlers pays per request.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any

import structlog

from socketsvc.observe import tracing

_TIMESTAMPER = structlog.processors.TimeStamper(fmt="iso", utc=True)
# Fields of every line this process writes: its pid, and its slot under a master.
# Request ids count per process, so with --processes the pid tells the lines apart.
_PROCESS: dict[str, Any] = {"pid": os.getpid()}
_CALL_HANDLERS = logging.Logger.callHandlers
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


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


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """Render structlog events as they are, and stdlib records through the foreign chain."""

    def __init__(self, render: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.render = render

    def format(self, record: logging.LogRecord) -> str:
        """Return the line for *record*."""
        event = record.__dict__.get("_socketsvc_event")
        if event is None:
            return str(super().format(record))
        return render_event(self.render, dict(event))


def render_event(chain: list[Any], event: dict[str, Any]) -> str:
    """Run the rendering processors over *event* and return the line."""
    result: Any = event
    for processor in chain:
        result = processor(None, "", result)
    return str(result)


def _exc_info(value: Any) -> Any:
    if value is True:
        return sys.exc_info()
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    return value or None


def _summary(event: dict[str, Any]) -> str:
    """Return ``event key=value ...`` for handlers that show a message (mail, Sentry)."""
    skip = {"event", "timestamp", "level", "logger", "exc_info", "exception"}
    parts = [str(event.get("event", ""))]
    parts += [f"{key}={value!r}" for key, value in event.items() if key not in skip]
    text = " ".join(parts)
    return text if len(text) <= 500 else text[:499] + "…"


class _Sink:
    """The structlog logger: an event becomes a stdlib record, or a line when only ours listens."""

    def __init__(self, name: str, ours: logging.StreamHandler, render: list[Any]) -> None:  # type: ignore[type-arg]
        self.name = name
        self._logger = logging.getLogger(name)
        self._ours = ours
        self._render = render

    def _only_ours(self) -> bool:
        if logging.Logger.callHandlers is not _CALL_HANDLERS:
            return False  # patched (Sentry's integration): records must reach it
        logger: logging.Logger | None = self._logger
        while logger is not None:
            if logger.filters or any(handler is not self._ours for handler in logger.handlers):
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True

    def _emit(self, method: str, event: dict[str, Any]) -> None:
        level = _LEVELS.get(method, logging.INFO)
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        if self._only_ours():
            self.write_line(level, event)
            return
        record = logging.LogRecord(
            self.name, level, "", 0, _summary(event), None, _exc_info(event.get("exc_info"))
        )
        for key, value in event.items():
            if key not in _RECORD_FIELDS:
                record.__dict__[key] = value
        record.__dict__["_socketsvc_event"] = event
        logger.handle(record)

    def write_line(self, level: int, event: dict[str, Any]) -> None:
        """Render *event* and write it with our handler (only it listens)."""
        ours = self._ours
        if level < ours.level:
            return
        line = render_event(self._render, event)
        ours.acquire()
        try:
            ours.stream.write(line + "\n")
            ours.stream.flush()
        except Exception:
            ours.handleError(logging.makeLogRecord({"msg": line}))
        finally:
            ours.release()

    def direct(self, method: str, event: dict[str, Any]) -> bool:
        """Write a complete *event* without structlog's processors, if only ours listens.

        For the canonical request line, whose fields are all known: it skips the
        processor chain (context merge, timestamper) that costs more than the
        rendering. Returns False when the event must take the usual path.
        """
        level = _LEVELS.get(method, logging.INFO)
        if not self._logger.isEnabledFor(level):
            return True
        if not self._only_ours() or structlog.contextvars.get_contextvars().keys() - event.keys():
            return False
        event["level"] = method
        event["logger"] = self.name
        _add_process(None, method, event)
        _TIMESTAMPER(None, method, event)  # adds "timestamp", as on the usual path
        self.write_line(level, event)
        return True

    def debug(self, event: dict[str, Any]) -> None:
        """Log at DEBUG."""
        self._emit("debug", event)

    def info(self, event: dict[str, Any]) -> None:
        """Log at INFO."""
        self._emit("info", event)

    def warning(self, event: dict[str, Any]) -> None:
        """Log at WARNING."""
        self._emit("warning", event)

    def error(self, event: dict[str, Any]) -> None:
        """Log at ERROR."""
        self._emit("error", event)

    def critical(self, event: dict[str, Any]) -> None:
        """Log at CRITICAL."""
        self._emit("critical", event)

    def exception(self, event: dict[str, Any]) -> None:
        """Log at ERROR (the traceback is in the event)."""
        self._emit("error", event)

    msg = log = info
    warn = warning
    fatal = critical


_sinks: dict[str, _Sink] = {}


def direct_sink(name: str) -> _Sink | None:
    """Return the daemon's sink for logger *name* (None before configure_logging)."""
    return _sinks.get(name)


def _to_sink(logger: Any, method_name: str, event_dict: Any) -> Any:
    """Hand the event dict itself to the sink (the last processor)."""
    event_dict.setdefault("level", method_name if method_name != "exception" else "error")
    return (event_dict,), {}


def _refresh_pid() -> None:
    _PROCESS["pid"] = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def set_process_slot(slot: int) -> None:
    """Add ``process_slot`` to every line of this process (a worker process of a master)."""
    _PROCESS["process_slot"] = slot


def _add_process(logger: Any, method_name: str, event_dict: Any) -> Any:
    """Add the process's fields, unless the event has its own."""
    for key, value in _PROCESS.items():
        event_dict.setdefault(key, value)
    return event_dict


def _add_logger_name(logger: Any, method_name: str, event_dict: Any) -> Any:
    event_dict["logger"] = getattr(logger, "name", None)
    return event_dict


def _console_streams() -> tuple[Any, ...]:
    return (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)


def _drop_console_handlers(stream: Any) -> None:
    """Remove project handlers that write to *stream* (the daemon's own lines go there)."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            if (
                type(handler) is logging.StreamHandler
                and getattr(handler, "stream", None) is stream
            ):
                logger.removeHandler(handler)


def configure_logging(
    level: str = "INFO", log_file: str | None = None, json: bool | None = None
) -> logging.Handler:
    """Add the daemon's handler to the project's logging and route structlog through it.

    JSON lines unless the stream is a terminal (then console lines). Return the handler.
    """
    _sinks.clear()  # made again, on the new handler, as structlog asks for them
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
    render: list[Any] = [structlog.processors.dict_tracebacks, renderer] if json else [renderer]
    # trace_id and span_id of the current span, with OpenTelemetry's API installed.
    traced: list[Any] = [tracing.log_ids] if tracing.installed() else []
    handler.setFormatter(
        _Formatter(
            render,
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                *traced,
                _add_process,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                _TIMESTAMPER,
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    if stream in _console_streams():
        _drop_console_handlers(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *traced,
            _add_process,
            structlog.processors.add_log_level,
            _add_logger_name,
            _TIMESTAMPER,
            structlog.processors.StackInfoRenderer(),
            _to_sink,
        ],
        logger_factory=lambda name="socketsvc", *args: _sink(name, handler, render),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    return handler


def _sink(name: str, handler: logging.Handler, render: list[Any]) -> _Sink:
    sink = _Sink(name, handler, render)  # type: ignore[arg-type]
    _sinks[name] = sink
    return sink


def reopen_log_files() -> None:
    """Reopen every log file the root logger writes to (on SIGHUP)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()
