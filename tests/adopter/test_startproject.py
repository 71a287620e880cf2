"""A new project, made only from what the README and docs/ tell an adopter, on the built wheel.

In a fresh virtualenv holding the wheel (``tests/adopter/conftest.py``), ``django-admin
startproject mysite`` and ``manage.py startapp notes``; the app's files are the code blocks
of docs/testing.md, each written to the file its first line names (``# notes/handlers.py``);
the settings are those the README, docs/tasks.md, docs/testing.md and ``manage.py check``'s
hints give; the admin has the button of docs/admin.md. On SQLite, in a file, so the daemon and the scripts share it. Then
the page's tests pass with pytest and with ``manage.py test``, the page's script runs in
``manage.py shell``, and a real ``runsocketservice`` answers ``call()``, runs the task,
serves the admin button pressed through Django's test client, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import django
import pytest

from socketsvc.client import call_with
from socketsvc.errors import SocketServiceError
from tests.adopter.wheel import CLEAN_ENV, run
from tests.harness.daemon import REPO
from tests.harness.waiting import poll

pytestmark = pytest.mark.timeout(600)

PAGE = REPO / "docs" / "testing.md"

# A fenced block of the page, and the file its first line names.
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"# (\S+\.(?:py|ini))(?: \(added at the end\))?")
SETTINGS = "mysite/settings.py"

# What the README and docs/tasks.md tell a project to add to its settings ({socket}: a
# directory this user owns, as the README says).
INSTALL = """
INSTALLED_APPS += ["socketsvc", "notes"]
SOCKETSVC = {{"SOCKET": {socket!r}}}
TASKS = {{
    "default": {{"BACKEND": "socketsvc.tasks.SocketServiceBackend", "QUEUES": ["default", "reports"]}}
}}
"""
DJANGO_TASKS = 'INSTALLED_APPS += ["django_tasks"]  # Django 5.2 only: the backport\'s app\n'
# What ``manage.py check`` (run by migrate too) tells a project on SQLite to set: the hint of
# socketsvc.W006 (docs/deploy.md).
SQLITE = """DATABASES["default"]["OPTIONS"] = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL",
}
"""

# docs/admin.md's button, on the app's model.
ADMIN = """from django.contrib import admin
from socketsvc.admin import Button, SocketServiceAdminMixin

from .models import Note


@admin.register(Note)
class NoteAdmin(SocketServiceAdminMixin, admin.ModelAdmin):
    socketsvc_buttons = [Button("notes.close", "Close")]
"""

PASSWORD = "a-long-admin-password-9"
SUPERUSER = f"""
from django.contrib.auth.models import User

User.objects.create_superuser("admin", "admin@example.com", {PASSWORD!r})
"""

# A shell's call to the running service.
CALL = """
import json
from socketsvc import call

print(json.dumps(call("notes.add", text="Water the plants")))
"""

# Enqueue the task and read its result until it has finished (30 s at most).
TASK = """
import json, time
from notes.tasks import count_notes

result = count_notes.enqueue()
deadline = time.monotonic() + 30
while not result.is_finished and time.monotonic() < deadline:
    time.sleep(0.05)
    result.refresh()
print(json.dumps({
    "status": result.status.value,
    "return_value": result.return_value if result.is_finished else None,
    "worker_ids": result.worker_ids,
}))
"""

# Press the note's button twice, as a logged-in superuser, with the form's CSRF token.
PRESS = """
import json, re
from django.test import Client
from django.test.utils import setup_test_environment
from notes.models import Note

setup_test_environment()  # the test client's host is allowed
client = Client(enforce_csrf_checks=True)
assert client.login(username="admin", password={password!r})
page = client.get("/admin/notes/note/{pk}/change/").content.decode()
form = re.search(
    r'<form method="post" action="([^"]+)" class="socketsvc-button">.*?'
    r'name="csrfmiddlewaretoken" value="([^"]+)".*?data-socketsvc-method="notes.close"',
    page,
    re.DOTALL,
)
assert form, "no Close button on the note's change form"
pressed = []
for _ in range(2):
    reply = client.post(form[1], {{"csrfmiddlewaretoken": form[2]}})
    messages = client.get(reply["Location"]).context["messages"]
    pressed.append({{
        "status": reply.status_code,
        "messages": [(m.level_tag, str(m)) for m in messages],
        "done": Note.objects.get(pk={pk}).done,
    }})
print(json.dumps({{"url": form[1], "pressed": pressed}}))
"""


def page_files() -> dict[str, str]:
    """The page's code blocks by the file each names; every block must name one."""
    files = {}
    for language, code in BLOCK.findall(PAGE.read_text()):
        first = code.partition("\n")[0]
        marker = MARKER.fullmatch(first)
        assert marker, f"a {language} block of {PAGE.name} names no file: {first!r}"
        assert marker[1] not in files, f"two blocks of {PAGE.name} name {marker[1]}"
        files[marker[1]] = code
    return files


def names_of_tests(code: str) -> set[str]:
    """The names of the tests a block defines."""
    return set(re.findall(r"^\s*def (test_\w+)\(", code, re.MULTILINE))


@dataclass
class Site:
    """The adopter's project: its directory, its venv's python, the socket it configures."""

    root: Path
    python: Path
    socket: Path

    def manage(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        return run(self.python, "manage.py", *args, cwd=self.root, stdin=stdin, timeout=timeout)

    def shell(self, code: str) -> object:
        """Run *code* in ``manage.py shell``; return the JSON of its last line of output."""
        lines = self.manage("shell", "-c", code).strip().splitlines()
        return json.loads(lines[-1])


@pytest.fixture(scope="module")
def site(adopter_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The adopter's project (:func:`make_site`), its socket in a short directory."""
    short = Path(tempfile.mkdtemp(prefix="ss", dir="/tmp"))  # a socket path fits in 107 bytes
    try:
        yield make_site(adopter_venv, tmp_path_factory.mktemp("adopter"), short / "notes.sock")
    finally:
        shutil.rmtree(short, ignore_errors=True)


def make_site(venv: Path, parent: Path, socket: Path) -> Site:
    """startproject, startapp, the page's files, the documented settings and admin button,
    migrated (``manage.py check`` then finds nothing to warn about), a superuser."""
    files = page_files()
    run(venv / "bin" / "django-admin", "startproject", "mysite", cwd=parent)
    project = Site(parent / "mysite", venv / "bin" / "python", socket)
    project.manage("startapp", "notes")
    settings = project.root / SETTINGS
    added = INSTALL.format(socket=str(project.socket))
    if django.VERSION < (6,):
        added += DJANGO_TASKS
    added += SQLITE
    settings.write_text(settings.read_text() + added + "\n" + files.pop(SETTINGS))
    for name, code in files.items():
        (project.root / name).write_text(code)
    (project.root / "notes" / "admin.py").write_text(ADMIN)
    project.manage("makemigrations", "notes", "-v0")
    project.manage("migrate", "-v0")
    assert "System check identified no issues" in project.manage("check")
    project.manage("shell", "-c", SUPERUSER)
    return project


def test_the_testing_pages_tests_pass_with_pytest_and_manage_py_test(site: Site) -> None:
    """Every test of docs/testing.md passes under pytest (the page's pytest.ini) in the new
    project, none skipped; its Django test cases pass under ``manage.py test`` too."""
    files = page_files()
    expected = names_of_tests(files["notes/test_notes.py"] + files["notes/tests.py"])
    assert len(expected) == 6
    report = site.root / "report.xml"
    run(site.python, "-m", "pytest", "-q", f"--junitxml={report}", cwd=site.root, timeout=180)
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        failed = [child.tag for child in case if child.tag != "properties"]
        outcomes[case.attrib["name"]] = failed or "passed"
    assert outcomes == dict.fromkeys(expected, "passed")

    done = subprocess.run(
        [site.python, "manage.py", "test", "notes", "-v2"],
        cwd=site.root,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ran 2 tests" in done.stderr and "\nOK" in done.stderr


def test_the_testing_pages_script_runs_in_the_shell(site: Site) -> None:
    """The page's script, in ``manage.py shell``: in process, a note is added and the task
    run; then a live service on the project's database closes the note."""
    out = site.manage("shell", stdin=page_files()["try_notes.py"])
    [results] = [line for line in out.splitlines() if "TaskResult" in line]
    assert "SUCCESSFUL" in results and "'open': " in results
    assert re.search(r"^\{'summary': 'Closed note \d+'\}$", out, re.MULTILINE), out
    # The live service's log so far (its line of the call may come just after the reply).
    assert '"event": "listening"' in out


def test_the_service_serves_the_handler_the_task_and_the_admin_button(site: Site) -> None:
    """``runsocketservice`` from the new venv answers call() from a shell, runs the enqueued
    task itself, and closes a note when the admin's button is pressed; SIGTERM: exit 0."""
    log_path = site.root / "service.log"
    with open(log_path, "wb") as log:
        service = subprocess.Popen(
            [site.python, "manage.py", "runsocketservice"],
            cwd=site.root,
            env=CLEAN_ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        poll(
            lambda: service.poll() is not None or answers(site.socket),
            timeout=60,
            why=log_path.read_text,
        )
        assert service.poll() is None, log_path.read_text()

        added = site.shell(CALL)
        assert isinstance(added, dict) and added["text"] == "Water the plants"

        task = site.shell(TASK)
        assert isinstance(task, dict), task
        assert task["status"] == "SUCCESSFUL", (task, log_path.read_text())
        assert task["return_value"]["open"] >= 1
        [worker] = task["worker_ids"]
        assert f"-{service.pid}-" in worker  # run by the service, not by the shell

        pk = added["id"]
        pressed = site.shell(PRESS.format(password=PASSWORD, pk=pk))
        assert isinstance(pressed, dict)
        assert pressed["url"] == f"/admin/notes/note/{pk}/socketsvc/notes_close/"
        first, second = pressed["pressed"]
        assert first == {
            "status": 302,
            "messages": [["success", f"Close: Closed note {pk}"]],
            "done": True,
        }
        assert second["status"] == 302 and second["done"]
        [(level, message)] = second["messages"]
        assert level == "error" and f"Note {pk} is not open" in message
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(10)
    assert service.returncode == 0, log_path.read_text()[-3000:]
    assert '"event": "system_check"' not in log_path.read_text()
    assert not site.socket.exists()


def answers(socket: Path) -> bool:
    """Whether a service answers a ping on *socket*."""
    try:
        call_with("rpc.ping", socket=str(socket), timeout=1.0)
    except SocketServiceError:
        return False
    return True
