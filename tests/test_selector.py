"""The loop's selector: on a listening socket shared by processes, a connection wakes one."""

from __future__ import annotations

import os
import select
import socket
import time

from socketsvc.selector import LoopSelector
from tests.waiting import poll


def _waiter(listener: socket.socket, report: int, ready: int) -> None:
    """In a child: wait on *listener* exclusively, report each wake-up, never accept."""
    selector = LoopSelector()
    selector.register_exclusive(listener, lambda: None)
    os.write(ready, b"r")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if selector.select(0.2):
            os.write(report, b"w")
            time.sleep(5)  # stay out of epoll_wait: one wake-up each, at most
    os._exit(0)


def _in_epoll_wait(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as wchan:
        return "ep" in wchan.read()  # do_epoll_wait / ep_poll


def test_one_connection_wakes_one_of_four_waiting_processes(short_tmp):
    """Four processes wait on one listening socket with EPOLLEXCLUSIVE; a connection that
    nobody accepts wakes exactly one of them (the herd stays asleep)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(short_tmp / "herd.sock"))
    listener.listen(8)
    report_r, report_w = os.pipe()
    ready_r, ready_w = os.pipe()
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            _waiter(listener, report_w, ready_w)
        children.append(pid)
    try:
        for _ in range(4):
            assert os.read(ready_r, 1) == b"r"
        # Each child blocked in epoll_wait (the kernel says so in wchan).
        poll(lambda: all(_in_epoll_wait(pid) for pid in children), timeout=10)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(short_tmp / "herd.sock"))
        poller = select.poll()
        poller.register(report_r, select.POLLIN)
        assert poller.poll(2000), "no process woke for the connection"
        time.sleep(0.5)  # would-be extra wake-ups arrive within this
        woken = os.read(report_r, 16)
        assert woken == b"w"
        client.close()
    finally:
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        listener.close()
