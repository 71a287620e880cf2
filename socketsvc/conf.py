"""The ``SOCKETSVC`` settings dict: defaults, command-line overrides and validation.

Every key is optional; unknown keys are an error so a typo never silently falls
back to a default::

    SOCKETSVC = {
        "SOCKET": "/run/socketsvc/socketsvc.sock",
        "SOCKET_MODE": 0o660,
        "WORKERS": 4,
    }
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured

DEFAULT_SOCKET = "/run/socketsvc/socketsvc.sock"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True)
class Config:
    """Validated daemon and client settings."""

    SOCKET: str = DEFAULT_SOCKET
    SOCKET_MODE: int = 0o660
    SOCKET_GROUP: str | int | None = None
    WORKERS: int = 4
    MAX_QUEUED: int = 256
    MAX_MESSAGE_BYTES: int = 1024 * 1024
    MAX_CONNECTIONS: int = 1024
    MAX_CONNECTIONS_PER_UID: int = 256
    MAX_PENDING_PER_CONNECTION: int = 64
    MAX_OUTPUT_BYTES: int = 16 * 1024 * 1024
    MAX_BATCH: int = 100
    MAX_JSON_DEPTH: int = 64
    MAX_NUMBER_DIGITS: int = 100
    IDLE_TIMEOUT: float = 300.0
    REQUEST_TIMEOUT: float = 10.0
    # None: the daemon's own uid and root. Peers whose uid is listed, or who
    # belong to a listed group (default: the socket file's group), may connect.
    ALLOWED_UIDS: tuple[int, ...] | None = None
    ALLOWED_GIDS: tuple[int, ...] | None = None
    DRAIN_TIMEOUT: float = 10.0
    # Calls waiting this long with no worker taking one: the pool is wedged,
    # and the systemd watchdog is no longer fed.
    STALL_TIMEOUT: float = 120.0
    CALL_TIMEOUT: float = 30.0
    DB_CHECK_AFTER_IDLE: float = 1.0
    # Seconds a request or task waits for a database it cannot connect to
    # (a restart, a failover) before it fails with -32001; 0: never waits.
    DB_UNAVAILABLE_WAIT: float = 5.0
    BACKLOG: int = 128
    ACTIVATION_NAME: str | None = None
    LOG_PARAMS: bool = False
    # Tasks (socketsvc.tasks.SocketServiceBackend in TASKS): threads that run
    # them (0: this daemon runs none), the queues it takes (None: every queue
    # of its TASKS backends), the safety sweep that catches a lost wake-up,
    # the heartbeat and the silence after which a daemon's tasks count as
    # lost, and how long finished results are kept (None: for ever).
    TASK_WORKERS: int = 2
    TASK_QUEUES: tuple[str, ...] | None = None
    TASK_SWEEP_INTERVAL: float = 30.0
    TASK_HEARTBEAT: float = 10.0
    TASK_LEASE: float = 60.0
    TASK_RETENTION: float | None = None
    # MySQL/MariaDB (no NOTIFY): how often a process with an idle task worker looks
    # for a task committed where its wake-up could not reach (0: never).
    TASK_WAKE_POLL: float = 0.025
    # The periodic schedules this daemon decides (None: every one declared).
    SCHEDULES: tuple[str, ...] | None = None
    # Worker processes (see socketsvc.process.master): how many ("auto": one per
    # core), and when one is replaced by a fresh one: after MAX_REQUESTS
    # requests (0: never), plus a random 0..MAX_REQUESTS_JITTER so they do not
    # all go at once, or once its resident memory passes MAX_WORKER_MEMORY_MB
    # (0: no ceiling). Any of them set runs a supervising master process.
    PROCESSES: int = 1
    MAX_REQUESTS: int = 0
    MAX_REQUESTS_JITTER: int = 0
    MAX_WORKER_MEMORY_MB: int = 0
    # How long a new worker process may take to become ready before it is given up on.
    WORKER_START_TIMEOUT: float = 60.0
    # Observation (socketsvc.observe): Prometheus metrics (None: on when prometheus_client
    # is installed), served over HTTP at METRICS_LISTEN ("127.0.0.1:9464" or a Unix
    # socket's path; None: not served, socketctl metrics still prints them), the
    # directory the processes keep them in (None: a fresh temporary one), the bearer
    # token the /metrics view accepts; the per-minute activity the admin's dashboard draws.
    METRICS: bool | None = None
    METRICS_LISTEN: str | None = None
    METRICS_DIR: str | None = None
    METRICS_TOKEN: str | None = None
    ACTIVITY: bool = True


# Settings that only take effect when the socket is (re)bound: a restart.
RESTART_ONLY = frozenset(
    {
        "SOCKET",
        "SOCKET_MODE",
        "SOCKET_GROUP",
        "BACKLOG",
        "ACTIVATION_NAME",
        "PROCESSES",
        "METRICS",
        "METRICS_LISTEN",
        "METRICS_DIR",
        "ACTIVITY",
    }
)


_INT_RANGES: dict[str, tuple[int, int]] = {
    "WORKERS": (1, 1024),
    "TASK_WORKERS": (0, 1024),
    "MAX_QUEUED": (1, 1_000_000),
    "MAX_MESSAGE_BYTES": (64, 1024**3),
    "MAX_CONNECTIONS": (1, 1_000_000),
    "MAX_CONNECTIONS_PER_UID": (1, 1_000_000),
    "MAX_PENDING_PER_CONNECTION": (1, 1_000_000),
    "MAX_OUTPUT_BYTES": (1024, 1024**3),
    "MAX_BATCH": (1, 1_000_000),
    "MAX_JSON_DEPTH": (2, 10_000),
    "MAX_NUMBER_DIGITS": (1, 4300),
    "BACKLOG": (1, 65535),
    "PROCESSES": (1, 1024),
    "MAX_REQUESTS": (0, 1_000_000_000),
    "MAX_REQUESTS_JITTER": (0, 1_000_000_000),
    "MAX_WORKER_MEMORY_MB": (0, 1_000_000),
}
_SECONDS = (
    "IDLE_TIMEOUT",
    "REQUEST_TIMEOUT",
    "DRAIN_TIMEOUT",
    "STALL_TIMEOUT",
    "CALL_TIMEOUT",
    "DB_CHECK_AFTER_IDLE",
    "DB_UNAVAILABLE_WAIT",
    "TASK_SWEEP_INTERVAL",
    "TASK_HEARTBEAT",
    "TASK_LEASE",
    "TASK_WAKE_POLL",
    "WORKER_START_TIMEOUT",
)
_POSITIVE_SECONDS = (
    "IDLE_TIMEOUT",
    "REQUEST_TIMEOUT",
    "DRAIN_TIMEOUT",
    "STALL_TIMEOUT",
    "CALL_TIMEOUT",
    "TASK_SWEEP_INTERVAL",
    "TASK_HEARTBEAT",
    "TASK_LEASE",
    "WORKER_START_TIMEOUT",
)


def reloaded(old: Config, fresh: Config) -> tuple[Config, dict[str, list[Any]], list[str]]:
    """Return the settings a reload puts in force, what changed, and what waits for a restart.

    Settings in RESTART_ONLY keep their old values.
    """
    before, after = asdict(old), asdict(fresh)
    changed = {key: [before[key], after[key]] for key in after if after[key] != before[key]}
    deferred = sorted(RESTART_ONLY & changed.keys())
    return replace(fresh, **{key: before[key] for key in deferred}), changed, deferred


def cores() -> int:
    """Return the number of CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def supervised(config: Config) -> bool:
    """Return True if *config* runs worker processes under a master."""
    return config.PROCESSES > 1 or config.MAX_REQUESTS > 0 or config.MAX_WORKER_MEMORY_MB > 0


def _fail(key: str, problem: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"SOCKETSVC[{key!r}] {problem}")


def validate_socket_path(path: str, key: str = "SOCKET") -> str:
    """Return *path* if it can name a filesystem Unix socket, else raise."""
    if not isinstance(path, str | os.PathLike):
        raise _fail(key, f"must be a path string, not {type(path).__name__}")
    path = os.fspath(path)
    if not path:
        raise _fail(key, "must not be empty")
    if path.startswith(("@", "\0")):
        raise _fail(
            key,
            f"{path!r} names an abstract socket, which has no file permissions and is "
            "reachable from any process in the network namespace; use a filesystem path",
        )
    if not os.path.isabs(path):
        raise _fail(key, f"{path!r} must be an absolute path")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise _fail(
            key,
            f"{path!r} is {len(os.fsencode(path))} bytes long; a Unix socket path "
            f"holds at most {MAX_SOCKET_PATH_BYTES}. Choose a shorter path.",
        )
    return path


def _check_value(key: str, value: Any) -> Any:
    if key == "SOCKET":
        return validate_socket_path(value)
    if key == "SOCKET_MODE":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
            raise _fail(key, f"must be an int permission mode such as 0o660, not {value!r}")
        if not value & 0o200:
            raise _fail(key, f"{value:#o} does not let the owner write: no one could connect")
        return value
    if key in ("ALLOWED_UIDS", "ALLOWED_GIDS"):
        if value is None:
            return None
        if isinstance(value, list | tuple | set | frozenset) and all(
            isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
        ):
            return tuple(sorted(value))
        raise _fail(key, f"must be a list of numeric ids (>= 0), or None, not {value!r}")
    if key == "ACTIVATION_NAME":
        if value is None or (isinstance(value, str) and value and ":" not in value):
            return value
        raise _fail(key, f"must be a FileDescriptorName= (no ':'), or None, not {value!r}")
    if key in ("TASK_QUEUES", "SCHEDULES"):
        if value is None:
            return None
        if isinstance(value, list | tuple | set | frozenset) and all(
            isinstance(item, str) and item for item in value
        ):
            return tuple(sorted(value))
        raise _fail(key, f"must be a list of names, or None, not {value!r}")
    if key == "TASK_RETENTION":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise _fail(key, f"must be a number of seconds > 0, or None, not {value!r}")
        return float(value)
    if key in ("LOG_PARAMS", "ACTIVITY"):
        if isinstance(value, bool):
            return value
        raise _fail(key, f"must be True or False, not {value!r}")
    if key == "METRICS":
        if value is None or isinstance(value, bool):
            return value
        raise _fail(
            key,
            f"must be True, False or None (on if prometheus_client is installed), not {value!r}",
        )
    if key in ("METRICS_LISTEN", "METRICS_DIR", "METRICS_TOKEN"):
        return _check_metrics_value(key, value)
    if key == "PROCESSES" and value == "auto":
        return cores()
    if key == "SOCKET_GROUP":
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, str) and value:
            return value
        raise _fail(key, f"must be a group name, a gid or None, not {value!r}")
    if key in _INT_RANGES:
        low, high = _INT_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(key, f"must be an int between {low} and {high}, not {value!r}")
        return value
    if key in _SECONDS:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise _fail(key, f"must be a number of seconds >= 0, not {value!r}")
        if key in _POSITIVE_SECONDS and value == 0:
            raise _fail(key, "must be greater than 0")
        return float(value)
    raise AssertionError(key)


def _check_metrics_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(key, f"must be a non-empty string or None, not {value!r}")
    if key == "METRICS_DIR" and not os.path.isabs(value):
        raise _fail(key, f"{value!r} must be an absolute path")
    if key == "METRICS_LISTEN":
        if value.startswith("/"):
            return validate_socket_path(value, key)
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail(
                key,
                f"{value!r} must be host:port (127.0.0.1:9464, [::1]:9464) or the absolute "
                "path of a Unix socket",
            )
    if key == "METRICS_TOKEN" and len(value) < 16:
        raise _fail(
            key, "must be at least 16 characters (a secret a scraper sends as a bearer token)"
        )
    return value


def build_config(
    settings_value: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Validate the ``SOCKETSVC`` dict plus non-None *overrides* into a Config."""
    known = [f.name for f in fields(Config)]
    merged: dict[str, Any] = {}
    if settings_value is not None:
        if not isinstance(settings_value, Mapping):
            raise ImproperlyConfigured(
                f"SOCKETSVC must be a dict, not {type(settings_value).__name__}"
            )
        merged.update(settings_value)
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values: dict[str, Any] = {}
    for key, value in merged.items():
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else "."
            raise ImproperlyConfigured(
                f"SOCKETSVC has an unknown key {key!r}{suggestion} Known keys: {', '.join(known)}"
            )
        values[key] = _check_value(key, value)
    config = replace(Config(), **values)
    if config.TASK_LEASE < 4 * config.TASK_HEARTBEAT:
        raise _fail(
            "TASK_LEASE",
            f"({config.TASK_LEASE:g} s) must be at least four times TASK_HEARTBEAT "
            f"({config.TASK_HEARTBEAT:g} s): a daemon claims only in the first half of its "
            "lease, and a live daemon would look lost",
        )
    return config


def get_config(**overrides: Any) -> Config:
    """Return the validated config from ``settings.SOCKETSVC`` and *overrides*."""
    from django.conf import settings

    value = getattr(settings, "SOCKETSVC", None) if settings.configured else None
    return build_config(value, overrides)


class _InForce:
    """The settings in force in this process: the daemon's (start and each reload), else
    ``settings.SOCKETSVC`` as first read (a web process, an RQ worker, a test)."""

    def __init__(self) -> None:
        self.config: Config | None = None

    def get(self) -> Config:
        if self.config is None:
            self.config = get_config()
        return self.config


_in_force = _InForce()


def in_force() -> Config:
    """Return the settings in force in this process (see :class:`_InForce`)."""
    return _in_force.get()


def put_in_force(config: Config) -> None:
    """Make *config* the settings in force: the daemon's loop does, at start and on reload."""
    _in_force.config = config


def reread_config(**overrides: Any) -> Config:
    """Re-execute the settings module and validate its ``SOCKETSVC`` again (for SIGHUP).

    Only ``SOCKETSVC`` is taken from the fresh module; the rest of Django's
    settings stay as loaded at startup.
    """
    import importlib
    import sys

    from django.conf import settings

    module = importlib.reload(sys.modules[settings.SETTINGS_MODULE])
    return build_config(getattr(module, "SOCKETSVC", None), overrides)
