"""The same tasks on RQ when one host is not enough: only TASKS changes, and a real rqworker runs them.

The project's settings switch to django-tasks-rq (tests/settings.py shows the
whole diff); a real ``manage.py rqworker`` runs the tasks against the shared
Redis on 127.0.0.1:6379, in a database number of the suite's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from tests.harness.daemon import REPO, manage, manage_env
from tests.harness.waiting import poll

QUEUES = ("default", "reports")


@pytest.fixture
def redis_db() -> Iterator[int]:
    """A Redis database number for this xdist worker alone, flushed before and after."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    number = 6 + int(worker.removeprefix("gw") or 0) % 4
    client = redis.Redis(host="127.0.0.1", port=6379, db=number)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise RuntimeError(
            "Redis does not answer on 127.0.0.1:6379; make test starts it (redis-server)"
        ) from exc
    client.flushdb()
    yield number
    client.flushdb()
    client.close()


def rq_env(database_url: str, redis_db: int, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "TEST_TASKS_BACKEND": "rq",
        "TEST_REDIS_DB": str(redis_db),
        **extra,
    }


@pytest.fixture
def rqworker():
    """Start long-lived ``manage.py rqworker`` processes; stop them at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *args: str, log=None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", *QUEUES, *args],
            cwd=REPO,
            env=manage_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_the_same_tasks_run_on_rq_by_changing_tasks_only(
    sqlite_url, redis_db, taskclient, short_tmp
):
    """The suite's and the demo's tasks, enqueued through django-tasks-rq, run in a real rqworker:
    results, a failure with its exception class, the demo's stock count report."""
    env = rq_env(sqlite_url, redis_db)
    client = taskclient(sqlite_url, str(short_tmp / "no-daemon.sock"), **env)
    added = client.enqueue("add", 2, 3)
    failing = client.enqueue("fail", "on rq")
    report = client.enqueue("project.shop.tasks.stock_count", kwargs={"seconds_per_product": 0.0})
    assert client.result(added["id"])["status"] == "READY"
    done = manage("rqworker", *QUEUES, "--burst", "--job-class", "django_tasks_rq.Job", env=env)
    assert done.returncode == 0, done.stderr
    assert client.result(added["id"])["return_value"] == 5
    failed = client.result(failing["id"])
    assert failed["status"] == "FAILED"
    assert failed["errors"][0]["exception_class_path"] == "builtins.ValueError"
    counted = client.result(report["id"])
    assert counted["status"] == "SUCCESSFUL"
    assert counted["return_value"]["summary"].startswith("Counted 5 products")


@pytest.mark.parametrize(
    ("job_class", "survives"),
    [("socketsvc.contrib.rq.Job", True), ("django_tasks_rq.Job", False)],
    ids=["with-the-lifecycle", "without"],
)
def test_a_non_forking_rq_worker_survives_wait_timeout_with_the_lifecycle_hook(  # noqa: PLR0917
    private_mariadb, redis_db, taskclient, rqworker, short_tmp, job_class, survives
):
    """wait_timeout=2, one SimpleWorker: a task, an idle spell past wait_timeout, another task.
    With socketsvc's job class the second runs on a fresh connection; without, it fails (2006)."""
    private_mariadb.set_wait_timeout(2)
    env = rq_env(private_mariadb.url(), redis_db, TEST_CONN_MAX_AGE="none")
    with open(short_tmp / "rqworker.log", "wb") as log:
        rqworker(env, "--worker-class", "rq.worker.SimpleWorker", "--job-class", job_class, log=log)
    client = taskclient(private_mariadb.url(), str(short_tmp / "no-daemon.sock"), **env)
    first = client.finished(client.enqueue("connection_id")["id"])
    assert first["status"] == "SUCCESSFUL"
    session = first["return_value"]
    poll(lambda: session not in [sid for sid, _ in private_mariadb.sessions()], timeout=30)
    second = client.finished(client.enqueue("connection_id")["id"])
    if survives:
        assert second["status"] == "SUCCESSFUL", second["errors"]
        assert second["return_value"] != session
    else:
        assert second["status"] == "FAILED"
        assert "OperationalError" in second["errors"][0]["exception_class_path"]
