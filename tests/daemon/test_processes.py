"""Worker processes under a master: shared socket, restart, recycling, rolling reload, watchdog.

Every test runs a real ``runsocketservice --processes 2`` (a master and two
worker processes) on SQLite, with clients that call it from several threads
while the master kills, replaces or recycles its workers. A call may fail only
where the test says it may; no call goes unanswered and none runs twice.
"""

from __future__ import annotations

import glob
import os
import signal
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from socketsvc.client import HandlerError, ServiceUnavailable, call_with, close_connections
from socketsvc.procfs import pid_alive
from tests.harness.daemon import Daemon, RawClient
from tests.harness.gate import Gate
from tests.harness.notify import NotifySocket
from tests.harness.waiting import poll


def status(daemon: Daemon) -> dict[str, Any]:
    """Return rpc.status from a fresh connection."""
    try:
        return dict(daemon.call("rpc.status"))
    finally:
        close_connections()


def two_workers(daemon: Daemon) -> set[int]:
    """Wait (bounded) until rpc.status reports two ready worker processes; return their pids.

    A process reports the others as they last wrote their figures (once a second, and
    at once when their state changes), so one answer may lag another.
    """
    return poll(lambda: p if len(p := worker_pids(daemon)) == 2 else None, why=daemon.log)


def worker_pids(daemon: Daemon) -> set[int]:
    """Return the pids of the worker processes that report as ready and serving."""
    rows = status(daemon)["processes"]
    return {row["pid"] for row in rows if row["ready"] and row["state"] == "serving"}


def effects(daemon: Daemon) -> Counter[str]:
    """Return how many times each token's call ran, as the handler recorded it (server side)."""
    database = daemon.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT token, COUNT(*) FROM testapp_campaigncall GROUP BY token")
        return Counter(dict(rows))


@dataclass
class Load:
    """Client threads calling a handler that records each run (``testapp.campaign_call``), in
    a loop; each call's answer is kept, and :meth:`finish` checks the handler's own record:
    a call answered ran exactly once, a call lost at most once."""

    daemon: Daemon
    threads: int = 8
    handler_seconds: float = 0.0
    answered: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    lost_tokens: list[str] = field(default_factory=list)
    wrong: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,))
            self._workers.append(thread)
            thread.start()
        return self

    def _run(self, n: int) -> None:
        count = 0
        try:
            while not self.stop.is_set():
                count += 1
                token = f"{n}-{count}-{uuid.uuid4().hex[:8]}"
                try:
                    if self.handler_seconds:
                        call_with(
                            "testapp.sleep", [self.handler_seconds], socket=self.daemon.socket
                        )
                    result = call_with(
                        "testapp.campaign_call", {"token": token}, socket=self.daemon.socket
                    )
                except ServiceUnavailable as exc:
                    self.lost.append(str(exc))
                    self.lost_tokens.append(token)
                    continue
                except BaseException as exc:
                    self.wrong.append(exc)
                    return
                if result != token:
                    self.wrong.append(AssertionError(f"{token} answered {result}"))
                self.answered.append(token)
        finally:
            close_connections()

    def wait_for_more(self, count: int) -> None:
        """Wait (bounded) until *count* more calls were answered."""
        target = len(self.answered) + count
        poll(lambda: self.wrong or len(self.answered) >= target, why=self.daemon.log)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._workers:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._workers), "a call never returned"
        assert self.wrong == []
        ran = effects(self.daemon)
        assert [t for t in self.answered if ran[t] != 1] == [], "an answered call ran != once"
        assert [t for t in self.lost_tokens if ran[t] > 1] == [], "a lost call ran twice"


@pytest.fixture
def two_processes(
    launch: Callable[..., Daemon], short_tmp: Path, sqlite_url: str
) -> Callable[..., Daemon]:
    def start(*args: str, env: dict[str, str] | None = None, **settings: Any) -> Daemon:
        daemon = launch(
            str(short_tmp / "p.sock"),
            {"DATABASE_URL": sqlite_url, **(env or {})},
            *args,
            settings={"PROCESSES": 2, **settings},
        )
        daemon.start()
        two_workers(daemon)
        return daemon

    return start


@pytest.fixture
def load() -> Iterator[list[Load]]:
    started: list[Load] = []
    yield started
    for each in started:
        each.stop.set()


def test_worker_processes_share_the_socket_and_status_reports_them_all(two_processes):
    """Both processes accept connections; rpc.status has a row per process and a total;
    SIGTERM drains them and leaves neither the socket nor a process behind."""
    daemon = two_processes()
    pids = two_workers(daemon)
    seen: set[int] = set()
    poll(lambda: seen.add(status(daemon)["pid"]) or seen == pids, why=daemon.log)
    whole = status(daemon)
    assert whole["master_pid"] == daemon.pid
    where = {
        e["socket"] for e in daemon.log_events() if e["event"] in ("listening", "master_started")
    }
    assert where == {daemon.socket, f"{daemon.socket} (the master's)"}
    assert whole["total"]["processes"] == 2
    assert whole["total"]["workers"] == 2 * whole["workers"]
    master = whole["master"]  # the master's own row: its slots, restarts and reloads
    assert (master["pid"], master["state"], master["restarts"]) == (daemon.pid, "serving", 0)
    assert {(row["pid"], row["state"]) for row in master["slots"]} == {
        (pid, "serving") for pid in pids
    }
    assert daemon.stop() == 0
    assert not Path(daemon.socket).exists()
    assert not any(pid_alive(pid) for pid in pids)


def test_every_line_names_its_process_and_an_error_names_the_line_to_read(two_processes):
    """Request ids count per process: every log line of a worker process carries its pid and
    slot (request lines and handler errors alike), and a handler error's data names the pid,
    so (request_id, pid) finds exactly one request line."""
    daemon = two_processes()
    with pytest.raises(HandlerError) as caught:
        call_with("testapp.fail", {"message": "kaput"}, socket=daemon.socket, timeout=10)
    close_connections()
    data = caught.value.data
    pids = two_workers(daemon)
    assert data["pid"] in pids

    def its_lines() -> list[dict[str, Any]]:  # written just after the reply
        return [
            e
            for e in daemon.log_events()
            if e["event"] == "request"
            and (e["request_id"], e.get("pid")) == (data["request_id"], data["pid"])
        ]

    lines = poll(its_lines, why=daemon.log)
    assert len(lines) == 1 and lines[0]["error_type"] == "RuntimeError", lines
    workers = [e for e in daemon.log_events() if e.get("pid") in pids]
    assert {"ready", "request"} <= {e["event"] for e in workers}
    assert all(e["process_slot"] in (0, 1) for e in workers), workers


def test_a_killed_worker_process_is_replaced_and_no_call_hangs(two_processes, load):
    """SIGKILL of a worker under 8 clients: its in-flight calls fail with ServiceUnavailable
    (never a hang, never a second run), a new worker takes its slot, and calls go on."""
    daemon = two_processes()
    victim, survivor = sorted(two_workers(daemon))
    traffic = Load(daemon, handler_seconds=0.02).start()
    load.append(traffic)
    traffic.wait_for_more(50)
    os.kill(victim, signal.SIGKILL)
    poll(lambda: (p := worker_pids(daemon)) and survivor in p and len(p) == 2 and victim not in p)
    traffic.wait_for_more(100)
    lost_before = len(traffic.lost)
    traffic.wait_for_more(100)
    traffic.finish()
    assert lost_before <= traffic.threads  # at most the calls the victim was running
    assert len(traffic.lost) == lost_before  # none once the new worker serves
    assert '"how": "killed by SIGKILL"' in daemon.log()
    master = poll(lambda: (m := status(daemon)["master"]) and m["restarts"] == 1 and m)
    assert victim not in {row["pid"] for row in master["slots"]}


def test_a_call_whose_worker_process_dies_fails_and_is_never_sent_again(two_processes, gate):
    """A call on a kept connection whose worker process is killed (SIGKILL) while running it
    gets ServiceUnavailable ("lost"): the request was read, so the client never sends it
    again, and the handler ran once (a resent call would wait at the gate in the other worker)."""
    daemon = two_processes()
    serving: list[int] = []
    outcome: list[object] = []

    def client() -> None:
        try:
            # Both calls go over this thread's one kept connection, so to one worker.
            serving.append(call_with("rpc.status", socket=daemon.socket, timeout=10)["pid"])
            outcome.append(call_with("testapp.hold", {"gate": gate.path}, socket=daemon.socket))
        except ServiceUnavailable as exc:
            outcome.append(exc)
        finally:
            close_connections()

    thread = threading.Thread(target=client)
    thread.start()
    gate.wait_for(1)
    os.kill(serving[0], signal.SIGKILL)
    thread.join(20)
    assert not thread.is_alive(), "the call was sent again and waits at the gate"
    assert len(outcome) == 1 and isinstance(outcome[0], ServiceUnavailable), outcome
    assert outcome[0].reason == "lost"
    assert gate.arrived == 1


def test_max_requests_recycles_workers_and_loses_nothing(two_processes, load):
    """With MAX_REQUESTS=150, 8 clients make each worker be replaced several times, and
    every call is answered with its result."""
    daemon = two_processes(MAX_REQUESTS=150, MAX_REQUESTS_JITTER=30)
    first = two_workers(daemon)
    traffic = Load(daemon).start()
    load.append(traffic)
    poll(lambda: len(worker_pids(daemon) - first) == 2, timeout=60, why=daemon.log)
    traffic.wait_for_more(200)
    traffic.finish()
    assert traffic.lost == []
    assert daemon.log().count('"reason": "max_requests"') >= 2


def test_sighup_replaces_every_worker_with_no_failed_call(two_processes, load):
    """SIGHUP under 8 clients: each worker is replaced by a fresh process once its successor
    is ready, and no call fails."""
    daemon = two_processes()
    before = two_workers(daemon)
    traffic = Load(daemon).start()
    load.append(traffic)
    traffic.wait_for_more(100)
    daemon.signal(signal.SIGHUP)
    poll(lambda: '"event": "reloaded"' in daemon.log(), why=daemon.log)
    after = two_workers(daemon)
    traffic.wait_for_more(100)
    traffic.finish()
    assert traffic.lost == []
    assert after.isdisjoint(before)
    poll(lambda: not any(pid_alive(pid) for pid in before))


def events_of(daemon: Daemon) -> list[str]:
    return [e["event"] for e in daemon.log_events()]


def successors(daemon: Daemon) -> list[int]:
    """Return the pids of the successors the master is starting (its report in rpc.status)."""
    master = status(daemon)["master"]
    return [slot["successor_pid"] for slot in master["slots"] if "successor_pid" in slot]


def master_story(daemon: Daemon) -> str:
    """The master's own log lines (for an assertion's message)."""
    return "\n".join(
        str(e) for e in daemon.log_events() if e.get("logger") == "socketsvc.process.master"
    )


def test_sighup_while_a_worker_is_being_recycled_still_completes(two_processes, load, short_tmp):
    """A SIGHUP that comes while a recycled worker's successor is starting: the successor takes
    over, then the reload replaces every slot's worker, READY follows and a later SIGHUP works
    too (the successor started before the reload was never counted, so the reload hung)."""
    start_gate = short_tmp / "start.sock"
    daemon = two_processes(
        env={"TEST_WORKER_START_GATE": str(start_gate)}, MAX_REQUESTS=100, MAX_REQUESTS_JITTER=0
    )
    first = two_workers(daemon)
    with Gate(start_gate) as gate:
        traffic = Load(daemon, threads=2).start()
        load.append(traffic)
        gate.wait_for(1)  # a successor (max_requests) is starting, held before READY=1
        traffic.finish()
        daemon.signal(signal.SIGHUP)
        poll(lambda: "reloading" in events_of(daemon), why=daemon.log)
    poll(lambda: "reloaded" in events_of(daemon), timeout=60, why=daemon.log)
    reloaded = two_workers(daemon)
    assert reloaded.isdisjoint(first)
    daemon.signal(signal.SIGHUP)
    poll(lambda: events_of(daemon).count("reloaded") == 2, timeout=60, why=daemon.log)
    assert two_workers(daemon).isdisjoint(reloaded)


def test_a_successor_that_never_gets_ready_leaves_recycling_and_reloads_working(
    two_processes, load, short_tmp
):
    """A recycled worker's successor that is not ready within WORKER_START_TIMEOUT is given up
    on; the old worker serves on, and a reload afterwards replaces every worker (the given-up
    successor stayed recorded, so no reload or recycle could start one again)."""
    start_gate = short_tmp / "start.sock"
    daemon = two_processes(
        env={"TEST_WORKER_START_GATE": str(start_gate)},
        MAX_REQUESTS=100,
        MAX_REQUESTS_JITTER=0,
        WORKER_START_TIMEOUT=3,
    )
    first = two_workers(daemon)
    with Gate(start_gate) as gate:
        traffic = Load(daemon, threads=2).start()
        load.append(traffic)
        gate.wait_for(1)
        traffic.finish()
        poll(lambda: "worker_process_not_ready" in events_of(daemon), why=daemon.log)
        # Both workers may have asked to be recycled: wait until no successor is pending.
        poll(lambda: not successors(daemon), why=lambda: master_story(daemon))
    assert two_workers(daemon) & first
    # The reload's own successors get the usual time to start (a busy machine is slow).
    daemon.reconfigure(PROCESSES=2, MAX_REQUESTS=100, MAX_REQUESTS_JITTER=0)
    daemon.signal(signal.SIGHUP)
    poll(lambda: "reloaded" in events_of(daemon), timeout=60, why=lambda: master_story(daemon))
    assert two_workers(daemon).isdisjoint(first)


def test_sighup_with_invalid_settings_replaces_no_worker(two_processes, short_tmp):
    """A reload whose settings fail validation is logged once and replaces no worker (a new
    one would read the same settings and fail); a valid reload after it rotates as usual."""
    daemon = two_processes()
    before = two_workers(daemon)
    daemon.reconfigure(PROCESSES=2, IDLE_TIMEOUT=-1)

    def events() -> list[str]:
        return [e["event"] for e in daemon.log_events()]

    daemon.signal(signal.SIGHUP)
    poll(lambda: events().count("reload_failed") == 1, why=daemon.log)
    daemon.signal(signal.SIGHUP)  # handled once the master is done with the first
    poll(lambda: events().count("reload_failed") >= 2, why=daemon.log)
    assert "reloading" not in events()
    assert two_workers(daemon) == before
    daemon.reconfigure(PROCESSES=2)
    daemon.signal(signal.SIGHUP)
    poll(lambda: "reloaded" in events(), why=daemon.log)
    assert events().count("reloading") == 1
    assert "worker_process_failed_to_start" not in events()
    assert two_workers(daemon).isdisjoint(before)


def master_report_written(daemon: Daemon) -> float:
    """Return when the master last wrote its report (it does every second, turn by turn)."""
    [report] = glob.glob(f"/tmp/socketsvc-{daemon.pid}-*/master.json")
    return os.stat(report).st_mtime


def assert_watchdog_starved(
    daemon: Daemon, notify: NotifySocket, between: Callable[[], None] | None = None
) -> None:
    """Once the master says it stopped feeding the watchdog, no WATCHDOG=1 comes while its
    loop turns at least twice more (its report rewritten twice, a second apart)."""

    def unresponsive() -> bool:
        while notify.receive(0) is not None:  # as systemd does: keep reading
            pass
        return '"event": "worker_process_unresponsive"' in daemon.log()

    poll(unresponsive, why=daemon.log)
    while notify.receive(0) is not None:  # what was sent before it decided
        pass
    seen = [master_report_written(daemon)]
    for _ in range(2):
        if between is not None:
            between()
        seen.append(poll(lambda: (at := master_report_written(daemon)) > seen[-1] and at))
    received = []
    while (fields := notify.receive(0)) is not None:
        received.append(fields)
    assert not [fields for fields in received if "WATCHDOG=1" in fields], received


def test_the_watchdog_stops_while_a_worker_process_is_stopped(
    two_processes, notify_socket: NotifySocket
):
    """The master feeds the watchdog while every worker pings it; SIGSTOP of one worker
    stops the feeding, SIGCONT brings it back."""
    daemon = two_processes(env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "400000"})
    notify_socket.wait_for("READY=1")
    notify_socket.wait_for("WATCHDOG=1", timeout=5)
    wedged = min(two_workers(daemon))
    os.kill(wedged, signal.SIGSTOP)
    try:
        assert_watchdog_starved(daemon, notify_socket)
    finally:
        os.kill(wedged, signal.SIGCONT)
    notify_socket.wait_for("WATCHDOG=1", timeout=10)


def test_the_watchdog_stops_while_a_worker_process_is_stalled(
    two_processes, notify_socket: NotifySocket, gate
):
    """A worker whose only handler thread is stuck, with a call waiting behind it, keeps
    turning its loop (and sending STATUS=) but stops pinging: the master stops feeding the
    watchdog until the handler returns."""
    daemon = two_processes(
        "--workers",
        "1",
        env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "400000"},
        STALL_TIMEOUT=0.5,
    )
    notify_socket.wait_for("READY=1")
    with RawClient(daemon.socket) as stuck:
        stuck.request({"jsonrpc": "2.0", "method": "testapp.hold", "params": [gate.path], "id": 1})
        gate.wait_for(1)
        stuck.request({"jsonrpc": "2.0", "method": "testapp.add", "params": [1, 1], "id": 2})
        # rpc.ping, answered by the stalled worker's loop, keeps changing its STATUS= line.
        pings = 0

        def ping() -> None:
            nonlocal pings
            pings += 1
            stuck.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": 100 + pings})

        assert_watchdog_starved(daemon, notify_socket, between=ping)
        gate.open()
        replies = {reply["id"]: reply for reply in (stuck.reply() for _ in range(2 + pings))}
        assert replies[1]["result"] == "released"
        assert replies[2]["result"] == 2
    notify_socket.wait_for("WATCHDOG=1", timeout=10)


def test_worker_processes_die_with_the_master(two_processes):
    """A master killed with SIGKILL takes its workers with it (no orphan keeps serving)."""
    daemon = two_processes()
    pids = two_workers(daemon)
    daemon.kill()
    poll(lambda: not any(pid_alive(pid) for pid in pids))
