"""The open-files limit: raised toward its hard limit at start, and checked against the caps.

Every connection is a descriptor. A soft limit of 1024 (the usual default
outside systemd) under ``MAX_CONNECTIONS=1024`` would make ``accept()`` fail
with EMFILE long before the cap: the daemon raises its soft limit to the hard
one, as nginx (``worker_rlimit_nofile``) and systemd services commonly do, and
says plainly when even that is less than the settings ask for.
"""

from __future__ import annotations

import resource

import structlog

from socketsvc.conf import Config

log = structlog.get_logger(__name__)

# Descriptors the daemon holds besides its connections: the listener, the
# selector, log files, database connections, the handback, signal sockets.
OVERHEAD = 64
# Never ask for more than this, even when the hard limit is "unlimited".
CEILING = 1 << 20


def raise_open_files(config: Config) -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard limit; warn if the caps exceed it.

    Returns the soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open_files_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    needed = config.MAX_CONNECTIONS + config.WORKERS + config.TASK_WORKERS + OVERHEAD
    if soft != resource.RLIM_INFINITY and needed > soft:
        log.warning(
            "open_files_limit_below_caps",
            limit=soft,
            needed=needed,
            max_connections=config.MAX_CONNECTIONS,
            hint="connections beyond the limit are refused by the kernel (EMFILE); raise "
            "LimitNOFILE= in the unit (or ulimit -n), or lower MAX_CONNECTIONS",
        )
    return int(soft)
