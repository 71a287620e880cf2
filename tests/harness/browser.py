"""A real headless Chromium (Debian's chromium + chromium-driver) and a real dev server for it.

Nothing is downloaded: Selenium is pointed at /usr/bin/chromedriver, which
drives /usr/bin/chromium. When either is missing the test fails and says how to
install them; it never skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.harness.daemon import REPO, manage_env
from tests.harness.waiting import poll

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # the suite runs as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
]


def _find(name: str, *candidates: str) -> str:
    found = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if found is None:
        pytest.fail(
            f"{name} is not installed: the browser tests need Debian's chromium and "
            "chromium-driver; install them with `.ci/system-deps test` "
            "(or apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    return found


@contextlib.contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Start headless Chromium through chromedriver, with a fresh profile; quit it afterwards."""
    binary = _find("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
    driver_path = _find("chromedriver", "/usr/bin/chromedriver")
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DevServer:
    """``manage.py runserver --noreload`` on a free port of 127.0.0.1, log captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # runserver serves the admin's static files only with DEBUG.
        self.env = manage_env({"DJANGO_DEBUG": "1", **env})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DevServer:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "runserver",
                    f"127.0.0.1:{self.port}",
                    "--noreload",
                    "--skip-checks",
                ],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        poll(self._answers, timeout=30, interval=0.05)
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"runserver exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}/admin/login/", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
