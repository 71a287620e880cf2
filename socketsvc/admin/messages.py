"""What the user is told after a button or an action: a short line for every reply."""

from __future__ import annotations

import json
from typing import Any

from socketsvc import protocol
from socketsvc.errors import (
    AccessDenied,
    CallTimeout,
    DatabaseUnavailable,
    HandlerError,
    InvalidParams,
    MethodNotFound,
    ProtocolError,
    RemoteError,
    ServiceBusy,
    ServiceUnavailable,
    SocketServiceError,
)

_MAX_MESSAGE_CHARS = 300


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _MAX_MESSAGE_CHARS:
        return text
    return text[: _MAX_MESSAGE_CHARS - 1] + "…"


def describe_result(result: Any) -> str:
    """Return a short human rendering of a handler's result.

    A dict with a ``"summary"`` string shows that; a flat dict shows its items;
    anything else is shown as compact JSON.
    """
    if isinstance(result, dict) and isinstance(result.get("summary"), str):
        return _shorten(result["summary"])
    if result is None:
        return "done"
    if isinstance(result, str):
        return _shorten(result)
    if isinstance(result, dict) and all(
        isinstance(value, str | int | float | bool) or value is None for value in result.values()
    ):
        return _shorten(", ".join(f"{key} {value}" for key, value in result.items()))
    return _shorten(json.dumps(result, separators=(", ", ": "), ensure_ascii=False))


def describe_failure(exc: SocketServiceError, method: str, timeout: float) -> str:
    """Return what went wrong, for a person, from a client exception."""
    if isinstance(exc, ServiceUnavailable):
        if exc.reason in ("not_running", "refused"):
            return (
                "the background service is not running. Start it "
                "(manage.py runsocketservice) and try again."
            )
        if exc.reason == "permission_denied":
            return (
                "the web server may not connect to the background service's socket; "
                "give its user write access to the socket (the socket's group)."
            )
        if exc.reason == "lost":
            return (
                "the connection to the background service was lost before it replied; "
                "the job may or may not have run. Check before trying again."
            )
        return f"the background service cannot be reached ({_shorten(str(exc))})."
    if isinstance(exc, CallTimeout):
        return (
            f"no reply from the background service within {timeout:g} s. The job may "
            "still be running; check its effect before trying again."
        )
    if isinstance(exc, HandlerError):
        detail = exc.data.get("message") if isinstance(exc.data, dict) else None
        text = detail if isinstance(detail, str) else exc.message
        error_type = exc.error_type or "Error"
        return f"the job failed with {error_type}: {_shorten(text)}"
    if isinstance(exc, DatabaseUnavailable):
        return "the background service cannot reach its database right now; try again later."
    if isinstance(exc, AccessDenied):
        return (
            "the background service does not accept requests from the web server's user; "
            "add it to SOCKETSVC['ALLOWED_UIDS'] or to an allowed group."
        )
    if isinstance(exc, ServiceBusy):
        if exc.code == protocol.SHUTTING_DOWN:
            return "the background service is shutting down; try again in a moment."
        return "the background service is busy; try again in a moment."
    if isinstance(exc, MethodNotFound):
        return (
            f"the background service has no handler {method!r}; is its app installed, "
            "and has the service been restarted since it was added?"
        )
    if isinstance(exc, InvalidParams):
        return f"the service refused its params: {_shorten(exc.message)}"
    if isinstance(exc, RemoteError):
        return f"the request was refused: {_shorten(exc.message)}"
    if isinstance(exc, ProtocolError):
        return "the background service sent a reply that could not be understood."
    return f"the background service could not be asked ({_shorten(str(exc))})."
