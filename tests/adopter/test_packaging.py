"""The package as a user gets it: built, checked, installed into a fresh venv, run.

Builds the wheel and the sdist with ``python -m build`` (once per run, shared with the other
adopter tests: ``tests/adopter/conftest.py``), checks them with ``twine check``, looks inside
them, then, in a new virtualenv holding the wheel with the ``postgres`` extra (no MySQL
driver), creates a project with ``django-admin startproject`` and one app with one handler,
starts ``runsocketservice`` from that venv and calls the handler with ``call()``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.adopter.wheel import CLEAN_ENV, run, wheel
from tests.harness.postgres import PostgreSQL
from tests.harness.waiting import poll

pytestmark = pytest.mark.timeout(600)

HANDLERS = """from socketsvc import handler


@handler
def greet(name: str) -> str:
    return f"hello, {name}"
"""


def test_the_wheel_and_sdist_pass_twine_check_and_hold_what_a_project_needs(
    dist: Path,
) -> None:
    """twine check passes; both hold the templates, static files, migrations and py.typed,
    and neither holds the demo project or the tests."""
    built = wheel(dist)
    [sdist] = dist.glob("socketsvc-*.tar.gz")
    run(sys.executable, "-m", "twine", "check", "--strict", built, sdist)
    in_wheel = set(zipfile.ZipFile(built).namelist())
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for names in (in_wheel, in_sdist):
        assert "socketsvc/py.typed" in names
        assert "socketsvc/migrations/0001_initial.py" in names
        assert any(n.startswith("socketsvc/templates/") and n.endswith(".html") for n in names)
        assert any(n.startswith("socketsvc/static/") for n in names)
        assert not any(n.startswith(("project/", "tests/", "bench/")) for n in names)
        assert "socketsvc/testing/pytest_plugin.py" in names
    [entry_points] = [n for n in in_wheel if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(built).read(entry_points).decode()
    assert "[pytest11]" in text and "socketsvc.testing.pytest_plugin" in text


def test_a_fresh_project_installs_the_wheel_without_mysql_and_serves_a_handler(
    adopter_venv: Path, short_tmp: Path, postgresql: PostgreSQL
) -> None:
    """In a new venv, the wheel with [postgres] installs without mysqlclient; a startproject
    project on PostgreSQL with one handler answers call() through a real runsocketservice."""
    venv = adopter_venv
    python = venv / "bin" / "python"
    installed = run(python, "-m", "pip", "list", "--format=freeze").lower()
    assert "mysqlclient" not in installed and "psycopg" in installed
    site = short_tmp / "site"
    site.mkdir()
    run(venv / "bin" / "django-admin", "startproject", "mysite", site, cwd=short_tmp)
    app = site / "hello"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "handlers.py").write_text(HANDLERS)
    sock = short_tmp / "site.sock"
    settings = site / "mysite" / "settings.py"
    name = f"site_{short_tmp.name.lower()}"
    postgresql.query(f"CREATE DATABASE {name}")
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": "postgres",
        "HOST": postgresql.socket_dir,
    }
    settings.write_text(
        settings.read_text()
        + f'\nINSTALLED_APPS += ["socketsvc", "hello"]\nSOCKETSVC = {{"SOCKET": "{sock}"}}\n'
        + f"DATABASES = {{'default': {database!r}}}\n"
    )
    run(python, "manage.py", "migrate", "-v0", cwd=site)
    log = (short_tmp / "site.log").open("wb")
    daemon = subprocess.Popen(
        [python, "manage.py", "runsocketservice"], cwd=site, env=CLEAN_ENV, stdout=log, stderr=log
    )
    try:
        poll(sock.exists, timeout=60)
        answer = run(
            python,
            "-c",
            f"from socketsvc import call; print(call('hello.greet', 'world', socket='{sock}'))",
            cwd=site,
        )
        assert answer.strip() == "hello, world"
    finally:
        daemon.terminate()
        daemon.wait(30)
        log.close()
    assert daemon.returncode == 0
    postgresql.query(f"DROP DATABASE {name} WITH (FORCE)")
