"""JSON-RPC 2.0 messages framed as newline-terminated lines. Pure: no sockets.

Every message is one UTF-8 JSON text on one line, terminated by ``\\n``::

    --> {"jsonrpc": "2.0", "method": "shop.restock", "params": {"sku": "A-1"}, "id": 7}\\n
    <-- {"jsonrpc": "2.0", "id": 7, "result": {"stock": 40}}\\n

A request without ``"id"`` is a notification and gets no reply. An array of
requests is a batch and gets one array of replies (none if every member was a
notification). Replies to separate requests on one connection come back in the
order they complete; clients match them by ``id``.

JSON encoders never put a raw newline inside a message (it is escaped as
``\\n`` in strings), so the line break is an unambiguous frame boundary.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

JSONValue: TypeAlias = Any
RequestId: TypeAlias = str | int | float | None

VERSION: Final = "2.0"
# Methods under this prefix are built into the service.
BUILTIN_PREFIX: Final = "rpc."

# Codes defined by the JSON-RPC 2.0 specification.
# Optional members of a request: the caller's W3C Trace Context (traceparent first).
TRACE_MEMBERS: Final = ("traceparent", "tracestate")
MAX_TRACE_LENGTH: Final = 1024

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Server errors, in the range the specification reserves for implementations.
HANDLER_ERROR: Final = -32000
DATABASE_UNAVAILABLE: Final = -32001
SERVER_BUSY: Final = -32002
MESSAGE_TOO_LARGE: Final = -32003
SHUTTING_DOWN: Final = -32004
ACCESS_DENIED: Final = -32005
REQUEST_TIMEOUT: Final = -32006

ERROR_NAMES: Final[dict[int, str]] = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
    HANDLER_ERROR: "Handler error",
    DATABASE_UNAVAILABLE: "Database unavailable",
    SERVER_BUSY: "Server busy",
    MESSAGE_TOO_LARGE: "Message too large",
    SHUTTING_DOWN: "Shutting down",
    ACCESS_DENIED: "Access denied",
    REQUEST_TIMEOUT: "Request timeout",
}


class RPCError(Exception):
    """A JSON-RPC error; raise it from a handler to choose the code and data sent."""

    def __init__(self, code: int, message: str, data: JSONValue = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, JSONValue]:
        """Return the JSON-RPC error object."""
        error: dict[str, JSONValue] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class MessageTooLarge(Exception):
    """A line grew past the configured maximum before its terminator arrived."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"message exceeds {limit} bytes without a line terminator")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Request:
    """One valid request (or notification) taken off the wire."""

    method: str
    params: list[JSONValue] | dict[str, JSONValue] | None
    id: RequestId
    is_notification: bool
    # The caller's W3C trace context ("traceparent", "tracestate"), when it sent one.
    trace: dict[str, str] | None = None

    @property
    def args(self) -> list[JSONValue]:
        """Return positional params."""
        return self.params if isinstance(self.params, list) else []

    @property
    def kwargs(self) -> dict[str, JSONValue]:
        """Return named params."""
        return self.params if isinstance(self.params, dict) else {}


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch: each member is a Request or the error reply for an invalid member."""

    items: list[Request | dict[str, JSONValue]]


Message: TypeAlias = Request | Batch | dict[str, JSONValue]
"""What :func:`parse` returns: a request, a batch, or a ready error reply."""


def result_response(request_id: RequestId, result: JSONValue) -> dict[str, JSONValue]:
    """Return a success reply."""
    return {"jsonrpc": VERSION, "id": request_id, "result": result}


def error_response(
    request_id: RequestId, code: int, message: str, data: JSONValue = None
) -> dict[str, JSONValue]:
    """Return an error reply."""
    return {"jsonrpc": VERSION, "id": request_id, "error": RPCError(code, message, data).to_dict()}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one message may hold, checked before and while decoding."""

    max_batch: int = 100
    max_depth: int = 64
    max_digits: int = 100


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = bytes(range(256)).translate(None, b"[{]}")
_LONG_NUMBER: dict[int, re.Pattern[bytes]] = {}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


# Built once: json.loads() and json.dumps() with options build one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_UTF8_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _nesting_too_deep(raw: bytes, max_depth: int) -> bool:
    # Cheap test first: few brackets cannot nest deeply.
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    depth = 0
    for byte in _STRING.sub(b"", raw).translate(None, _BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > max_depth:
            return True
    return False


def _number_too_long(raw: bytes, max_digits: int) -> bool:
    pattern = _LONG_NUMBER.get(max_digits)
    if pattern is None:
        pattern = _LONG_NUMBER[max_digits] = re.compile(rb"\d{%d}" % (max_digits + 1))
    # Digits inside strings are text, not numbers: look again without strings.
    return bool(pattern.search(raw)) and bool(pattern.search(_STRING.sub(b"", raw)))


def decode_json(raw: bytes, limits: Limits = Limits()) -> JSONValue:
    """Decode one message; raise RPCError(PARSE_ERROR) for anything that is not strict JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RPCError(PARSE_ERROR, f"Parse error: invalid UTF-8 at byte {exc.start}") from None
    if _nesting_too_deep(raw, limits.max_depth):
        raise RPCError(PARSE_ERROR, f"Parse error: JSON nested deeper than {limits.max_depth}")
    if _number_too_long(raw, limits.max_digits):
        raise RPCError(
            PARSE_ERROR, f"Parse error: a number has more than {limits.max_digits} digits"
        )
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise RPCError(PARSE_ERROR, "Parse error: JSON nested too deeply") from None
    except ValueError as exc:
        raise RPCError(PARSE_ERROR, f"Parse error: {exc}") from None
    if _SURROGATE_ESCAPE.search(raw) and _holds_lone_surrogate(value):
        raise RPCError(
            PARSE_ERROR,
            "Parse error: a string holds a lone UTF-16 surrogate (an escape from \\ud800 "
            "to \\udfff without its pair), which is not text",
        )
    return value


# A \uD800-\uDFFF escape: half of a pair, or alone (which decodes to no character).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _holds_lone_surrogate(value: JSONValue) -> bool:
    """Return True if a string in *value* (keys included) cannot be encoded as UTF-8."""
    try:
        _UTF8_ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _valid_id(value: object) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def parse_request(obj: JSONValue) -> Request:
    """Validate one decoded request object; raise RPCError(INVALID_REQUEST) with the reason."""
    if not isinstance(obj, dict):
        raise RPCError(INVALID_REQUEST, "Invalid Request: expected a JSON object")
    if obj.get("jsonrpc") != VERSION:
        raise RPCError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be exactly "2.0"')
    method = obj.get("method")
    if not isinstance(method, str):
        raise RPCError(INVALID_REQUEST, 'Invalid Request: "method" must be a string')
    params = obj.get("params")
    if "params" in obj and not isinstance(params, list | dict):
        raise RPCError(INVALID_REQUEST, 'Invalid Request: "params" must be an array or an object')
    if "id" in obj and not _valid_id(obj["id"]):
        raise RPCError(INVALID_REQUEST, 'Invalid Request: "id" must be a string, number or null')
    trace = None
    if TRACE_MEMBERS[0] in obj:
        trace = _trace_context(obj)
    return Request(method, params, obj.get("id"), "id" not in obj, trace)


def _trace_context(obj: dict[str, JSONValue]) -> dict[str, str]:
    """Return the optional W3C trace context members of a request, checked."""
    found: dict[str, str] = {}
    for key in TRACE_MEMBERS:
        if key not in obj:
            continue
        value = obj[key]
        if not isinstance(value, str) or len(value) > MAX_TRACE_LENGTH:
            raise RPCError(
                INVALID_REQUEST,
                f'Invalid Request: "{key}" must be a string of at most '
                f"{MAX_TRACE_LENGTH} characters",
            )
        found[key] = value
    return found


def _id_for_error(obj: JSONValue) -> RequestId:
    """Return the id to echo for an invalid request: its id if that could be read, else null."""
    if isinstance(obj, dict) and _valid_id(obj.get("id")):
        return obj.get("id")
    return None


def _request_or_error(obj: JSONValue) -> Request | dict[str, JSONValue]:
    try:
        return parse_request(obj)
    except RPCError as exc:
        return error_response(_id_for_error(obj), exc.code, exc.message)


def parse(raw: bytes, limits: Limits = Limits()) -> Message:
    """Parse one line (without its terminator) into a request, a batch, or an error reply."""
    try:
        obj = decode_json(raw, limits)
    except RPCError as exc:
        return error_response(None, exc.code, exc.message)
    if isinstance(obj, list):
        if not obj:
            return error_response(None, INVALID_REQUEST, "Invalid Request: empty batch")
        if len(obj) > limits.max_batch:
            return error_response(
                None,
                INVALID_REQUEST,
                f"Invalid Request: batch of {len(obj)} exceeds the limit of {limits.max_batch}",
            )
        return Batch([_request_or_error(item) for item in obj])
    return _request_or_error(obj)


def find_not_json(value: object, where: str) -> tuple[str, str] | None:
    """Return where in *value* the first value JSON cannot carry is, and what it is
    (``"a date"``, ``"an object"``, ``"a non-finite float (nan)"``).

    *where* names *value* itself (``"quantity"``, ``"args[0]"``); a nested one is
    named by its path (``"items[2]"``, ``"meta['when']"``). None when all is JSON.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return where, f"a non-finite float ({value!r})"
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_not_json(item, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not (key is None or isinstance(key, (str, int, float, bool))):
                return f"{where} (its key {key!r})", _a(type(key).__name__)
            found = find_not_json(item, f"{where}[{key!r}]")
            if found is not None:
                return found
        return None
    return where, _a(type(value).__name__)


def find_not_json_argument(values: object, positional: str) -> tuple[str, str] | None:
    """:func:`find_not_json` for call arguments: named ones (a dict) by their names,
    positional ones (a list) as ``positional[i]``."""
    if isinstance(values, dict):
        for name, value in values.items():
            found = find_not_json(value, str(name))
            if found is not None:
                return found
        return None
    return find_not_json(values, positional)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def encode(message: JSONValue) -> bytes:
    """Serialize a reply (or request) as one line; raise ValueError/TypeError if not JSON."""
    return _ENCODER.encode(message).encode("ascii") + b"\n"


class LineFramer:
    """Split a byte stream into lines, refusing to buffer a line longer than its limit.

    The caller asks :meth:`room` how much it may read next, so an oversize line is
    detected before more than ``limit + 1`` bytes of it are ever held. A new
    limit (a reload) applies from the next line on: the line already being
    buffered keeps the larger of the two, so a reload never breaks it.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._line_limit = max_bytes  # the limit of the line now being buffered
        self._partial = bytearray()

    @property
    def max_bytes(self) -> int:
        """Return the limit for lines that start from now on."""
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self._max_bytes = value
        self._line_limit = max(self._line_limit, value) if self._partial else value

    @property
    def pending(self) -> int:
        """Return how many bytes of an unterminated line are buffered."""
        return len(self._partial)

    def room(self) -> int:
        """Return how many bytes may be read before the limit is known to be exceeded (>= 1)."""
        return self._line_limit + 1 - len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        """Add *data*; return the complete lines (terminators stripped, blank lines dropped)."""
        self._partial += data
        if b"\n" not in data:
            if len(self._partial) > self._line_limit:
                raise MessageTooLarge(self._line_limit)
            return []
        *lines, rest = self._partial.split(b"\n")
        first_limit = self._line_limit
        self._partial = bytearray(rest)
        self._line_limit = self._max_bytes
        complete = [bytes(line).removesuffix(b"\r") for line in lines]
        limits = [first_limit] + [self._max_bytes] * (len(complete) - 1)
        for line, limit in zip(complete, limits, strict=True):
            if len(line) > limit:
                raise MessageTooLarge(limit)
        if len(self._partial) > self._max_bytes:
            raise MessageTooLarge(self._max_bytes)
        return [line for line in complete if line.strip()]

    def take_rest(self) -> bytes | None:
        """Return the unterminated tail at end of stream, if it holds anything."""
        rest = bytes(self._partial)
        self._partial.clear()
        self._line_limit = self._max_bytes
        return rest if rest.strip() else None
