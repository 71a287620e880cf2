"""The loop's selector: on a listening socket shared by processes, a connection wakes one."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys

from tests.harness.daemon import REPO
from tests.harness.waiting import poll

# A process that waits on the inherited listener exclusively, reports each
# wake-up on the inherited pipe and never accepts.
_WAITER = """
import os, socket, sys, time
from socketsvc.server.selector import LoopSelector
listener = socket.socket(fileno=int(sys.argv[1]))
report = int(sys.argv[2])
selector = LoopSelector()
selector.register_exclusive(listener, lambda: None)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if selector.select(0.5):
        os.write(report, b"w")
        time.sleep(10)  # stay out of epoll_wait: one wake-up each, at most
"""


def _wchan(pid: int) -> str:
    with open(f"/proc/{pid}/wchan") as wchan:
        return wchan.read()


def _in_epoll_wait(pid: int) -> bool:
    wchan = _wchan(pid)
    return wchan.startswith("ep_") or "epoll" in wchan  # ep_poll, do_epoll_wait


def _asleep_elsewhere(children: list[subprocess.Popen[bytes]]) -> int:
    """Return how many children sleep outside epoll_wait (a woken one, in its time.sleep)."""
    return sum(
        _wchan(child.pid) not in ("", "0") and not _in_epoll_wait(child.pid) for child in children
    )


def test_one_connection_wakes_one_of_four_waiting_processes(short_tmp):
    """Four processes wait on one listening socket with EPOLLEXCLUSIVE; a connection that
    nobody accepts wakes exactly one of them (the herd stays asleep)."""
    path = str(short_tmp / "herd.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    report_r, report_w = os.pipe()
    fds = (listener.fileno(), report_w)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WAITER, str(fds[0]), str(fds[1])], cwd=REPO, pass_fds=fds
        )
        for _ in range(4)
    ]
    try:
        # Each child blocked in epoll_wait (the kernel says so in wchan).
        poll(lambda: all(_in_epoll_wait(child.pid) for child in children), timeout=20)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        poller = select.poll()
        poller.register(report_r, select.POLLIN)
        assert poller.poll(2000), "no process woke for the connection"
        # Any wake-up happened at the connect: a woken process is no longer asleep in
        # epoll_wait (the kernel's wchan), so three of the four still are, to stay.
        assert poll(
            lambda: (
                sum(_in_epoll_wait(child.pid) for child in children) == 3
                and _asleep_elsewhere(children) == 1
            )
        )
        assert os.read(report_r, 16) == b"w"
        client.close()
    finally:
        for child in children:
            child.kill()
            child.wait()
        listener.close()
        os.close(report_r)
        os.close(report_w)
