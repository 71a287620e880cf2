"""The package as an adopter gets it: the wheel and sdist built once per run, a fresh venv.

:func:`build` runs ``python -m build`` on this checkout; :func:`make_venv` creates a new
virtualenv and installs the built wheel into it with pip, next to the Django release the
running interpreter has (so the adopter's tests run on each Django the suite runs on).
:func:`once` makes either happen once across pytest-xdist's workers; :func:`run` runs a
command in a user's shell: nothing of this suite's settings or import path.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import django

from tests.harness.daemon import REPO

# A user's shell: nothing of this suite's settings, import path or pytest run.
CLEAN_ENV = {
    key: value
    for key, value in os.environ.items()
    if key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
    and not key.startswith(("TEST_", "PYTEST_", "SOCKETSVC_"))
}


def run(*args: str | Path, cwd: Path = REPO, timeout: float = 300, stdin: str | None = None) -> str:
    """Run a command in a clean environment; return its output, or fail with its output."""
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=CLEAN_ENV,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def once(shared: Path, name: str, make: Callable[[Path], None]) -> Path:
    """Make *shared*/*name* with ``make(path)`` once, whichever xdist worker asks first."""
    target = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".ready").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            make(target)
            (target / ".ready").touch()
    return target


def build(out: Path) -> None:
    """Build the wheel and the sdist of this checkout into *out*, as the README says."""
    run(sys.executable, "-m", "build", "--outdir", out, REPO)


def wheel(dist: Path) -> Path:
    """The one wheel in *dist*."""
    [built] = dist.glob("socketsvc-*.whl")
    return built


def make_venv(target: Path, *requirements: str) -> None:
    """Create a virtualenv at *target* and pip-install *requirements* and this Django."""
    run(sys.executable, "-m", "venv", target)
    run(
        target / "bin" / "python",
        "-m",
        "pip",
        "install",
        "-q",
        *requirements,
        f"Django=={django.get_version()}",
    )
