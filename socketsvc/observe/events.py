"""What the daemon reports where things happen: the one place its parts call.

The server, the database lifecycle, the task runner and the master call these
functions; each goes to the Prometheus metrics (:mod:`~socketsvc.observe.prom`)
and to the per-minute activity (:mod:`~socketsvc.observe.activity`) when they
are on, and costs one test when both are off (a web process, a test run
without the daemon). Nothing here may raise into the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from socketsvc import protocol

if TYPE_CHECKING:
    from socketsvc.observe.activity import Activity
    from socketsvc.observe.prom import Metrics

# Set by the daemon at start (enable()); None while off.
_metrics: Metrics | None = None
_activity: Activity | None = None
# The methods a label may name (the service's own and the project's); others are "(unknown)".
_methods: frozenset[str] = frozenset()

UNKNOWN_METHOD = "(unknown)"
OUTCOMES = {
    None: "ok",
    protocol.PARSE_ERROR: "parse_error",
    protocol.INVALID_REQUEST: "invalid_request",
    protocol.METHOD_NOT_FOUND: "method_not_found",
    protocol.INVALID_PARAMS: "invalid_params",
    protocol.INTERNAL_ERROR: "internal_error",
    protocol.HANDLER_ERROR: "handler_error",
    protocol.DATABASE_UNAVAILABLE: "db_unavailable",
    protocol.SERVER_BUSY: "busy",
    protocol.MESSAGE_TOO_LARGE: "too_large",
    protocol.SHUTTING_DOWN: "shutting_down",
    protocol.ACCESS_DENIED: "access_denied",
    protocol.REQUEST_TIMEOUT: "timeout",
}


def enable(metrics: Metrics | None, activity: Activity | None, methods: frozenset[str]) -> None:
    """Send the events of this process to *metrics* and *activity* (None: not there)."""
    global _metrics, _activity, _methods
    _children.clear()
    _metrics, _activity, _methods = metrics, activity, methods


def disable() -> None:
    """Stop sending events (the process stops, or a test ends)."""
    enable(None, None, frozenset())


def on() -> bool:
    """Return True if anything listens."""
    return _metrics is not None or _activity is not None


def outcome_name(code: int | None) -> str:
    """Return the label of a reply's error code (``ok`` without one)."""
    return OUTCOMES.get(code, "error")


# -- calls and connections ----------------------------------------------------------


# (method, code) -> the request counter's and the duration histogram's children: a call
# costs two dictionary lookups, not the library's label handling.
_children: dict[tuple[str, int | None], tuple[Any, Any]] = {}


def call_answered(method: str, code: int | None, seconds: float) -> None:
    """A call was answered (or refused) with *code* (None: a result), *seconds* after it came."""
    if _metrics is not None:
        children = _children.get((method, code))
        if children is None:
            children = _call_children(_metrics, method, code)
        children[0].inc()
        children[1].observe(seconds)
    if _activity is not None:
        _activity.call(code is not None)


def _call_children(metrics: Metrics, method: str, code: int | None) -> tuple[Any, Any]:
    label = method if method in _methods else UNKNOWN_METHOD
    children = (
        metrics.requests.labels(label, outcome_name(code)),
        metrics.request_duration.labels(label),
    )
    if label != UNKNOWN_METHOD:  # bounded: the methods the daemon knows
        _children[(method, code)] = children
    return children


def call_running(delta: int) -> None:
    """A handler started (+1) or ended (-1)."""
    if _metrics is not None:
        _metrics.in_flight.inc(delta)


def connection_opened() -> None:
    if _metrics is not None:
        _metrics.connections.inc()


def connection_closed() -> None:
    if _metrics is not None:
        _metrics.connections.dec()


def connection_refused(code: int) -> None:
    """A connection was refused (its caps, its peer, a line too long or too slow)."""
    if _metrics is not None:
        _metrics.refused.labels(outcome_name(code)).inc()


def connection_evicted() -> None:
    if _metrics is not None:
        _metrics.evicted.inc()


# -- the database -------------------------------------------------------------------


def db_connected(reconnect: bool) -> None:
    """A database connection was opened (*reconnect*: it replaces one that died)."""
    if _metrics is not None:
        _metrics.db_connects.inc()
        if reconnect:
            _metrics.db_reconnects.inc()


def db_down(alias: str) -> None:
    """*alias* could not be reached (the start of an outage)."""
    if _metrics is not None:
        _metrics.db_outages.labels(alias).inc()
        _metrics.db_down.labels(alias).set(1)


def db_up(alias: str, seconds: float, began: float) -> None:
    """*alias* is back after *seconds* (began: the outage's start, as ``time.time()``)."""
    if _metrics is not None:
        _metrics.db_outage_seconds.labels(alias).inc(seconds)
        _metrics.db_down.labels(alias).set(0)
    if _activity is not None:
        _activity.outage(alias, began, began + seconds)


# -- tasks --------------------------------------------------------------------------


def task_enqueued(task: str, queue: str, count: int = 1) -> None:
    if _metrics is not None:
        _metrics.tasks_enqueued.labels(task, queue).inc(count)


def task_started(task: str, queue: str, latency: float) -> None:
    """A run started *latency* seconds after it could have."""
    if _metrics is not None:
        _metrics.tasks_started.labels(task, queue).inc()
        _metrics.task_latency.labels(queue).observe(latency)
    if _activity is not None:
        _activity.task_started(queue, latency)


def task_ended(task: str, queue: str, outcome: str, seconds: float) -> None:
    """A run ended: *outcome* is successful, failed, cancelled, time_limit or retry."""
    if _metrics is not None:
        _metrics.task_duration.labels(task, queue).observe(seconds)
        if outcome == "retry":
            _metrics.retries.labels(task, queue).inc()
        else:
            _metrics.tasks_finished.labels(task, queue, outcome).inc()
    if _activity is not None:
        _activity.task_ended(queue, outcome, seconds)


def task_finished_elsewhere(task: str, queue: str, outcome: str) -> None:
    """A task ended without a run of this process ending (taken back, stopped by force)."""
    if _metrics is not None and outcome != "retry":
        _metrics.tasks_finished.labels(task, queue, outcome).inc()
    if _activity is not None:
        _activity.task_ended(queue, outcome, None)


def runs_lost(queue: str, count: int) -> None:
    """*count* runs of a dead process or daemon were taken back."""
    if _metrics is not None:
        _metrics.lost.labels(queue).inc(count)


def time_limit_kill(task: str, queue: str) -> None:
    """A run was stopped by force (its hard limit, or a cancel it did not heed)."""
    if _metrics is not None:
        _metrics.time_limit_kills.labels(task, queue).inc()


def schedule_ran(schedule: str, lag: float) -> None:
    """A schedule's slot was enqueued *lag* seconds after its time."""
    if _metrics is not None:
        _metrics.schedule_runs.labels(schedule).inc()
        _metrics.schedule_lag.labels(schedule).set(lag)


# -- processes ----------------------------------------------------------------------


def process_exited(pid: int) -> None:
    """A worker process is gone: its live gauges (in flight, connections) stop counting."""
    if _metrics is not None:
        from socketsvc.observe import prom

        prom.process_dead(pid)


def process_restarted() -> None:
    """A worker process exited unasked; the master starts another."""
    if _metrics is not None:
        _metrics.restarts.inc()


def process_recycled(reason: str) -> None:
    """A worker process is replaced on purpose (requests, memory, a reload)."""
    if _metrics is not None:
        _metrics.recycles.labels(reason).inc()


def snapshot() -> dict[str, Any]:
    """What this process observes, for ``rpc.status``."""
    from socketsvc.observe import tracing

    return {
        "metrics": _metrics is not None,
        "activity": _activity is not None,
        "tracing": tracing.active(),
    }
