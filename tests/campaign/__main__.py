"""A fault campaign: thousands of tasks under random faults, their history checked.

    .venv/bin/python -m tests.campaign --db mariadb --duration 60 --seed 1234
    .venv/bin/python -m tests.campaign --db postgresql --duration 1800 --write docs/reliability.md

Two daemons, each a master with two worker processes, share one throwaway database;
clients enqueue tasks of every kind (quick, slow with progress, failing, retried,
cancelled at random moments, a periodic task every second) and call a handler, while a
nemesis kills worker processes and whole daemons, freezes them past their lease, restarts
the database, kills its sessions and sends SIGHUP (recycles come with the calls). Then the
faults stop, everything is healed, the schedule is paused, and once no task is left READY
or RUNNING the history is checked (tests/campaign/checker.py). It prints a table and the
seed; the exit status is 1 if any invariant was violated. A seed replays the same clients
and the same fault schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.campaign import report
from tests.campaign.breakage import BREAKS
from tests.campaign.cluster import SCHEDULE, Cluster
from tests.campaign.history import read_history
from tests.campaign.nemesis import Nemesis
from tests.campaign.workload import Workload

# The settling waits while the tasks left go down, and gives up once they have not for this
# long (a task stuck READY or RUNNING), or after SETTLE_AT_MOST in all (a backlog left by a
# machine too slow for the load drains at its own pace meanwhile).
SETTLE_STALLED = 120.0
SETTLE_AT_MOST = 1800.0


def run(vendor: str, duration: float, seed: int, base: Path, keep: bool) -> report.Outcome:
    """Run one campaign in *base*; return what it found."""
    cluster = Cluster(base, vendor)
    try:
        print(f"campaign: {vendor}, seed {seed}, {duration:g} s of faults, in {base}", flush=True)
        url = cluster.start_database()
        os.environ.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            DATABASE_URL=url,
            SOCKETSVC_SOCKET=str(base / "a.sock"),
            TEST_CONN_HEALTH_CHECKS="1",
        )
        import django

        django.setup()
        cluster.deaths.start()
        for name in ("a", "b"):
            cluster.start_daemon(name)
        started = time.time()
        workload = Workload(seed, {name: d.socket for name, d in cluster.daemons.items()})
        nemesis = Nemesis(cluster, seed)
        workload.start()
        nemesis.start()
        time.sleep(duration)  # the campaign's length is what is asked for
        print("healing", flush=True)
        nemesis.stop()
        workload.stop()
        time.sleep(4.0)  # the schedulers catch up on slots missed during the last fault
        paused_at = time.time()
        cluster.query(
            "UPDATE socketsvc_schedule SET enabled = %s WHERE name = %s", [False, SCHEDULE]
        )
        print("settling", flush=True)
        settled = _settle(cluster)
        unsettled = [] if settled else cluster.unsettled()
        cluster.stop_daemons()
        history = read_history(cluster, workload.record, paused_at)
        return report.Outcome(
            vendor=vendor,
            seed=seed,
            duration=duration,
            elapsed=time.time() - started,
            settled=settled,
            unsettled=unsettled,
            history=history,
            record=workload.record,
            faults=nemesis.faults,
            faults_failed=nemesis.failed,
            events=cluster.logs(),
        )
    finally:
        cluster.close()
        if not keep:
            cluster.remove()


def _settle(cluster: Cluster) -> bool:
    """Wait until no task is READY or RUNNING; return whether that happened (False once the
    count has not gone down for SETTLE_STALLED seconds, or after SETTLE_AT_MOST)."""
    started = time.monotonic()
    lowest, progressed = None, started
    while (
        now := time.monotonic()
    ) - progressed < SETTLE_STALLED and now - started < SETTLE_AT_MOST:
        left = cluster.query(
            "SELECT COUNT(*) FROM socketsvc_task WHERE status IN ('READY', 'RUNNING')"
        )[0][0]
        if left == 0:
            return True
        if lowest is None or left < lowest:
            lowest, progressed = left, now
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.campaign", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--db", choices=("mariadb", "postgresql"), default="mariadb")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults (60)")
    parser.add_argument("--seed", type=int, default=None, help="replay this seed")
    parser.add_argument("--write", metavar="PATH", help="also put the table into this page")
    parser.add_argument("--keep", action="store_true", help="keep the directory (daemon logs)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    parser.add_argument(
        "--break",
        dest="broken",
        choices=BREAKS,
        help="run a build broken on purpose (tests/campaign/breakage.py): it must be caught",
    )
    options = parser.parse_args(argv)
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    if options.broken:
        os.environ["CAMPAIGN_BREAK"] = options.broken
        print(f"a build broken on purpose: {options.broken}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="camp", dir="/tmp"))
    try:
        outcome = run(options.db, options.duration, seed, base, options.keep)
        text = report.text(outcome)
        print(text, flush=True)
        if options.write:
            report.write(outcome, Path(options.write))
        if options.json:
            Path(options.json).write_text(json.dumps(report.summary(outcome), indent=2))
        return 0 if outcome.clean else 1
    finally:
        if options.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
