"""What a client call can raise: one exception class per way a call can fail."""

from __future__ import annotations

from socketsvc import protocol
from socketsvc.protocol import JSONValue


class SocketServiceError(Exception):
    """Base class of every client-side error."""


class ServiceUnavailable(SocketServiceError):
    """The service could not be reached: not running, refused, or no permission."""

    def __init__(self, message: str, path: str, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class CallTimeout(SocketServiceError):
    """No reply arrived within the timeout (the request may still run)."""


class ProtocolError(SocketServiceError):
    """The service answered with something that is not a valid JSON-RPC reply."""


class RemoteError(SocketServiceError):
    """The service answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: JSONValue = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def from_error(cls, error: dict[str, JSONValue]) -> RemoteError:
        """Build the most specific subclass for a JSON-RPC error object."""
        code = error.get("code")
        message = error.get("message")
        if not isinstance(code, int) or not isinstance(message, str):
            raise ProtocolError(f"malformed error object in reply: {error!r}")
        subclass = _BY_CODE.get(code, RemoteError)
        return subclass(code, message, error.get("data"))

    @property
    def error_type(self) -> str | None:
        """Return the handler's exception type name, for handler errors."""
        if isinstance(self.data, dict) and isinstance(self.data.get("type"), str):
            return str(self.data["type"])
        return None


class MethodNotFound(RemoteError):
    """No handler has that name."""


class InvalidParams(RemoteError):
    """The params do not fit the handler's signature."""


class HandlerError(RemoteError):
    """The handler raised; ``error_type`` and ``message`` say what."""


class DatabaseUnavailable(RemoteError):
    """The handler could not reach its database."""


class AccessDenied(RemoteError):
    """The service refused this process's user (its uid and groups are not allowed)."""


class ServiceBusy(RemoteError):
    """The service refused the request because its queue is full or it is shutting down."""


_BY_CODE: dict[int, type[RemoteError]] = {
    protocol.METHOD_NOT_FOUND: MethodNotFound,
    protocol.INVALID_PARAMS: InvalidParams,
    protocol.HANDLER_ERROR: HandlerError,
    protocol.DATABASE_UNAVAILABLE: DatabaseUnavailable,
    protocol.SERVER_BUSY: ServiceBusy,
    protocol.SHUTTING_DOWN: ServiceBusy,
    protocol.ACCESS_DENIED: AccessDenied,
}
