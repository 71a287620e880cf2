"""The loop's selector: on a listening socket shared by processes, a connection wakes one."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time

from tests.daemon import REPO
from tests.waiting import poll

# A process that waits on the inherited listener exclusively, reports each
# wake-up on the inherited pipe and never accepts.
_WAITER = """
import os, socket, sys, time
from socketsvc.selector import LoopSelector
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


def _in_epoll_wait(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as wchan:
        return "ep" in wchan.read()  # do_epoll_wait / ep_poll


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
        time.sleep(0.5)  # would-be extra wake-ups arrive within this
        assert os.read(report_r, 16) == b"w"
        client.close()
    finally:
        for child in children:
            child.kill()
            child.wait()
        listener.close()
        os.close(report_r)
        os.close(report_w)
