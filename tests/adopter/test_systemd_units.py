"""The unit files in systemd/: valid for systemd-analyze, well sandboxed, and free of known traps."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from socketsvc.conf import Config
from tests.harness.daemon import REPO

UNITS = REPO / "systemd"


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise RuntimeError(
            "systemd-analyze not found: install Debian's systemd package "
            "(make test does this when run as root)"
        )
    return path


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The units with Exec paths pointed at binaries this machine has."""
    for name in ("socketsvc.service", "socketsvc.socket"):
        text = (UNITS / name).read_text()
        text = text.replace("/srv/socketsvc/.venv/bin/python", sys.executable)
        text = re.sub(r"ExecReload=/bin/kill", f"ExecReload={shutil.which('kill')}", text)
        (tmp_path / name).write_text(text)
    return tmp_path


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_units_verify_cleanly(unit_copy):
    """systemd-analyze verify exits 0 with no output at all (it exits 0 even on unknown keys)."""
    done = subprocess.run(
        [analyze(), "verify", "socketsvc.socket", "socketsvc.service"],
        cwd=unit_copy,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert done.stdout == ""
    assert done.stderr == ""


def test_service_exposure_is_2_0_or_better(unit_copy):
    """systemd-analyze security rates the service at exposure 2.0 or better."""
    done = subprocess.run(
        [analyze(), "security", "--offline=true", "--threshold=20", "socketsvc.service"],
        cwd=unit_copy,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    exposure = re.search(r"Overall exposure level for socketsvc.service: (\d+\.\d)", done.stdout)
    assert exposure is not None
    assert float(exposure[1]) <= 2.0


def test_service_directives_match_the_daemon():
    """Type=notify with the watchdog, a stop timeout above the drain deadline, and no traps."""
    service = unit("socketsvc.service")["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    assert seconds(service["TimeoutStopSec"]) > Config().DRAIN_TIMEOUT
    assert seconds(service["WatchdogSec"]) >= 2 * 1.0  # the loop wakes at least every second
    assert "PIDFile" not in service
    assert "RuntimeDirectory" not in service  # would delete the socket unit's directory
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert "AF_UNIX" in service["RestrictAddressFamilies"]
    assert "--daemonize" not in service["ExecStart"]


def test_socket_unit_is_a_private_listening_stream():
    """The socket unit listens under /run/socketsvc with mode 0660 for a group, Accept=no."""
    socket_unit = unit("socketsvc.socket")["Socket"]
    path = socket_unit["ListenStream"]
    assert path.startswith("/run/socketsvc/")
    assert not path.startswith(("/tmp/", "/var/tmp/"))
    assert socket_unit["SocketMode"] == "0660"
    assert socket_unit["SocketGroup"]
    assert socket_unit["Accept"] == "no"


def test_every_non_default_directive_is_commented():
    """Each directive in the units has a comment above it or in its block saying why."""
    for name in ("socketsvc.service", "socketsvc.socket"):
        lines = (UNITS / name).read_text().splitlines()
        for index, line in enumerate(lines):
            if "=" not in line or line.startswith(("#", "[")):
                continue
            key = line.split("=", 1)[0]
            if key in {"Description", "WantedBy", "Documentation", "User", "Group"}:
                continue
            paragraph = []
            for previous in reversed(lines[:index]):
                if not previous.strip() or previous.startswith("["):
                    break
                paragraph.append(previous)
            assert any(line.startswith("#") for line in paragraph), f"{name}: {key}"
