"""What it costs to tell whether an idle database connection is still alive.

    python -m bench.liveness [--rounds 20000]

For MariaDB and PostgreSQL (the machine's own servers, over their Unix
sockets), the time per check of: socketsvc's no-round-trip check (has the
server closed the socket? one poll), Django's ``is_usable()`` ping
(``SELECT 1``, or mysqlclient's ``ping()``), and psycopg_pool's check (an
empty query). Prints a table of medians over five interleaved runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from socketsvc.db.vendors.base import peer_closed


class _Wrapper:
    """What peer_closed reads: the driver connection as ``.connection``."""

    def __init__(self, raw: Any) -> None:
        self.connection = raw


def _mariadb() -> tuple[Any, dict[str, Callable[[], object]]]:
    import MySQLdb

    raw = MySQLdb.connect(unix_socket="/run/mysqld/mysqld.sock", user="root")

    def select_one() -> object:
        cursor = raw.cursor()
        cursor.execute("SELECT 1")
        return cursor.fetchone()

    wrapper = _Wrapper(raw)
    return raw, {
        "poll (no round trip)": lambda: peer_closed(wrapper),
        "ping()": raw.ping,
        "SELECT 1": select_one,
    }


def _postgresql() -> tuple[Any, dict[str, Callable[[], object]]]:
    import psycopg
    from psycopg_pool import ConnectionPool

    raw = psycopg.connect(host="/var/run/postgresql", user="postgres", autocommit=True)

    def select_one() -> object:
        with raw.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()

    wrapper = _Wrapper(raw)
    return raw, {
        "poll (no round trip)": lambda: peer_closed(wrapper),
        "SELECT 1 (Django's is_usable)": select_one,
        "empty query (psycopg_pool's check)": lambda: ConnectionPool.check_connection(raw),
    }


def _time(check: Callable[[], object], rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        check()
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20000)
    options = parser.parse_args()
    print("| server | check | µs per check (median of 5) | vs poll |")
    print("|---|---|---|---|")
    for name, open_checks in (("MariaDB", _mariadb), ("PostgreSQL", _postgresql)):
        raw, checks = open_checks()
        samples: dict[str, list[float]] = {label: [] for label in checks}
        for _ in range(5):
            for label, check in checks.items():
                samples[label].append(_time(check, options.rounds))
        raw.close()
        floor = statistics.median(samples["poll (no round trip)"])
        for label, values in samples.items():
            median = statistics.median(values)
            print(f"| {name} | {label} | {median:.1f} | {median / floor:.0f}x |")


if __name__ == "__main__":
    main()
