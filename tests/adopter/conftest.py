"""The built package and a fresh venv with it, shared by the adopter tests of one run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.adopter.wheel import build, make_venv, once, wheel


def _shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every xdist worker of this run sees."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and the sdist, built once per run by ``python -m build``."""
    return once(_shared(tmp_path_factory), "adopter-dist", build)


@pytest.fixture(scope="session")
def adopter_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding what an adopter installs: the wheel with the ``postgres``
    extra, the running Django release, pytest and pytest-django (created once per run)."""
    return once(
        _shared(tmp_path_factory),
        "adopter-venv",
        lambda target: make_venv(target, f"{wheel(dist)}[postgres]", "pytest", "pytest-django"),
    )
