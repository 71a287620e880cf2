"""The fault campaign in the suite: 60 s of random faults on each database, every invariant kept.

A run takes about two minutes (the servers, the daemons, the faults, the settling). Its
seed is new each time and printed, with the whole table, so a failure can be replayed:
``.venv/bin/python -m tests.campaign --db <db> --duration 60 --seed <seed>``. Set
CAMPAIGN_SEED to run the suite's campaigns with a given seed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from tests.campaign.nemesis import KINDS
from tests.harness.daemon import REPO, manage_env

DURATION = 60


@pytest.mark.timeout(900)
@pytest.mark.parametrize("vendor", ["mariadb", "postgresql"])
def test_a_minute_of_random_faults_breaks_no_invariant(vendor, short_tmp):
    """Two daemons with worker processes, thousands of tasks of every kind and calls, under a
    minute of every kind of fault: every invariant holds (0 violations), all settled."""
    seed = int(os.environ.get("CAMPAIGN_SEED") or random.SystemRandom().randrange(10**6))
    figures = short_tmp / "campaign.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.campaign",
            "--db",
            vendor,
            "--duration",
            str(DURATION),
            "--seed",
            str(seed),
            "--json",
            str(figures),
        ],
        cwd=REPO,
        env=manage_env(),
        capture_output=True,
        text=True,
        timeout=840,
    )
    table = done.stdout[done.stdout.find("campaign on") :]
    print(table)
    assert figures.exists(), (
        f"seed {seed}: the campaign did not finish:\n{done.stdout}{done.stderr}"
    )
    found = json.loads(figures.read_text())
    assert found["violations"] == dict.fromkeys(found["violations"], 0), table
    assert found["settled"], table
    assert done.returncode == 0, table
    assert found["tasks"] >= 600, table
    assert set(found["faults"]) == set(KINDS), table
    assert found["faults_failed"] == 0, table
