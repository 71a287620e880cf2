"""The one canonical log line of each request, written after its reply is on its way."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import structlog

from socketsvc.logsetup import direct_sink
from socketsvc.methods.dispatch import Outcome
from socketsvc.observe import events
from socketsvc.server.transport import Peer

log_name = "socketsvc.request"
log = structlog.get_logger(log_name)


def log_request(  # noqa: PLR0917
    request_id: int,
    peer: Peer,
    conn_id: int,
    method: str,
    received: float,
    outcome: Outcome,
    params: Any = None,
    trace_ids: tuple[str, str] | None = None,
) -> None:
    """Write the canonical line; a logging failure (a full disk, a broken handler) is swallowed.

    The reply has already been handed back, so nothing here can cost a client its answer.
    The call is counted here too (:mod:`socketsvc.observe.events`).
    """
    seconds = time.monotonic() - received
    with contextlib.suppress(Exception):  # never at the cost of the log line
        events.call_answered(method, outcome.error_code, seconds)
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": method,
        "peer_pid": peer.pid,
        "peer_uid": peer.uid,
        "conn": conn_id,
        "duration_ms": round(seconds * 1000, 3),
        "outcome": "ok" if outcome.error_code is None else "error",
        "db_connects": outcome.db_connects,
        "db_reconnects": outcome.db_reconnects,
    }
    if outcome.error_code is not None:
        fields["error_code"] = outcome.error_code
        fields["error"] = outcome.error_message
        fields["error_type"] = outcome.error_type
    if params is not None:
        fields["params"] = params
    if trace_ids is not None:
        fields["trace_id"], fields["span_id"] = trace_ids
    try:
        if outcome.exception is not None:
            log.error("request", exc_info=outcome.exception, **fields)
            return
        method = "info" if outcome.error_code is None else "warning"
        sink = direct_sink(log_name)
        if sink is None or not sink.direct(method, {**fields, "event": "request"}):
            getattr(log, method)("request", **fields)
    except Exception:  # noqa: S110 (nowhere left to report it)
        pass
