"""The unit files in systemd/: valid for systemd-analyze, well sandboxed, and free of known traps.

The README's install steps are followed as a user would, in a temporary root:
its shell commands run there (those that need the host's systemd, its users or
a package index aside), its unit lines are written into the copied units, and
the result must verify and name the project the steps set up.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from socketsvc.conf import Config
from tests.harness.daemon import REPO

UNITS = REPO / "systemd"
README = UNITS / "README.md"
# The unit's interpreter as shipped: the README's example project's virtualenv.
SHIPPED_PYTHON = "/srv/myproject/.venv/bin/python"
# The README's example project: its directory, and the name of its settings package.
PROJECT = "/srv/myproject"
PROJECT_NAME = "myproject"
# Steps the test cannot follow: a system user, a package index, the running systemd.
HOST_ONLY = re.compile(r"^(useradd|usermod|systemctl) |/pip install ")


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise RuntimeError(
            "systemd-analyze not found: install Debian's systemd package "
            "(make test does this when run as root)"
        )
    return path


def unit(name: str, directory: Path = UNITS) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(directory / name)
    return parser


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The units with Exec paths pointed at binaries this machine has."""
    assert SHIPPED_PYTHON in (UNITS / "socketsvc.service").read_text()
    for name in ("socketsvc.service", "socketsvc.socket"):
        text = (UNITS / name).read_text()
        text = text.replace(SHIPPED_PYTHON, sys.executable)
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


def install_section() -> str:
    """The README's Install section, up to the next second-level heading."""
    text = README.read_text()
    start = text.index("\n## Install\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def blocks(language: str) -> list[str]:
    """The Install section's fenced code blocks of one language, dedented, in order."""
    fence = re.compile(r"^( *)```([\w-]*)\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)
    found = [
        textwrap.dedent(match[3])
        for match in fence.finditer(install_section())
        if match[2] == language
    ]
    assert found, f"no {language} block in the Install section of {README}"
    return found


def lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def under(root: Path, text: str) -> str:
    """Paths under /etc and /srv moved into the temporary root."""
    return re.sub(r"(?<![\w./-])/(etc|srv)/", f"{root}/\\1/", text)


def environment(assignments: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(assignments))


@pytest.fixture(scope="module")
def followed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary root after the README's Install steps.

    The host's side is there before the steps, as on a real host: the project
    (``startproject``, so its manage.py and settings module are real) in
    PROJECT, and /etc/systemd/system. Then every shell command of the steps
    runs, from the socketsvc repository's root (the README copies the units
    from there), with /etc and /srv moved into the root; then every unit line
    the steps show replaces the line with its key (commented out or not) in
    the copied units.
    """
    section = install_section()
    assert f"`{PROJECT}`" in section
    assert f"`{PROJECT_NAME}.settings`" in section
    root = tmp_path_factory.mktemp("root")
    project = Path(under(root, PROJECT))
    project.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "django", "startproject", PROJECT_NAME, project],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for block in blocks("sh"):
        for line in lines(block):
            if HOST_ONLY.search(line):
                continue
            done = subprocess.run(
                ["sh", "-ec", under(root, line)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{line}: {done.stderr[-2000:]}"
    installed = root / "etc" / "systemd" / "system"
    texts = {
        name: (installed / name).read_text() for name in ("socketsvc.service", "socketsvc.socket")
    }
    for block in blocks("ini"):
        for line in lines(block):
            key = line.split("=", 1)[0]
            pattern = re.compile(rf"^#?{re.escape(key)}=.*$", re.MULTILINE)
            places = [(name, at) for name, text in texts.items() for at in pattern.finditer(text)]
            assert len(places) == 1, f"{key}= is in the units {len(places)} times, not once"
            [(name, at)] = places
            texts[name] = texts[name][: at.start()] + under(root, line) + texts[name][at.end() :]
    for name, text in texts.items():
        (installed / name).write_text(text)
    return root


def test_readme_steps_give_units_that_verify_cleanly(followed: Path) -> None:
    """The units copied and adapted as systemd/README.md says pass systemd-analyze verify."""
    done = subprocess.run(
        [analyze(), "verify", "socketsvc.socket", "socketsvc.service"],
        cwd=followed / "etc" / "systemd" / "system",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ""


def test_readme_adapted_service_runs_the_projects_manage_py(followed: Path) -> None:
    """The adapted service runs the virtualenv's Python the steps made on the project's
    manage.py, from the project's directory, with a settings module the project has."""
    service = unit("socketsvc.service", followed / "etc" / "systemd" / "system")["Service"]
    directory = Path(service["WorkingDirectory"])
    assert directory == Path(under(followed, PROJECT))
    python, script, command, *_options = shlex.split(service["ExecStart"])
    assert (Path(python).parents[1] / "pyvenv.cfg").is_file()  # a virtualenv's Python
    assert os.access(python, os.X_OK)
    assert Path(script) == directory / "manage.py"
    assert Path(script).is_file()
    assert command == "runsocketservice"
    settings = environment(service["Environment"])["DJANGO_SETTINGS_MODULE"]
    done = subprocess.run(
        [python, "-c", f"import importlib; importlib.import_module({settings!r})"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_readme_steps_make_a_private_environment_file_where_the_unit_reads_it(
    followed: Path,
) -> None:
    """The file the unit's EnvironmentFile= names exists, and neither it nor its directory
    lets other users in (the file not even the group)."""
    service = unit("socketsvc.service", followed / "etc" / "systemd" / "system")["Service"]
    path = Path(under(followed, service["EnvironmentFile"].removeprefix("-")))
    assert stat.S_ISREG(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o007 == 0


def test_readme_settings_example_reads_exactly_the_environment_file_example(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's settings example runs with the variables of its environment file example
    and reads every one of them."""
    [example] = blocks("dotenv")
    variables = dict(line.split("=", 1) for line in lines(example))
    read: set[str] = set()

    class Environ(dict[str, str]):
        def __getitem__(self, key: str) -> str:
            read.add(key)
            return super().__getitem__(key)

    monkeypatch.setattr(os, "environ", Environ(variables))
    [settings] = blocks("python")
    namespace: dict[str, Any] = {}
    exec(settings, namespace)
    assert read == set(variables)
    assert namespace["SECRET_KEY"] == variables["DJANGO_SECRET_KEY"]


def test_every_extra_the_deploy_docs_name_is_one_the_package_has() -> None:
    """socketsvc[extra] in systemd/README.md and docs/deploy.md names an extra of pyproject.toml."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = [
        extra.strip()
        for path in (README, REPO / "docs" / "deploy.md")
        for match in re.finditer(r"socketsvc\[([^\]]+)\]", path.read_text())
        for extra in match[1].split(",")
    ]
    assert "postgres" in named
    assert set(named) <= set(extras)
