"""The loop's transport, drain state machine, pool and admission, in-process with real sockets."""

from __future__ import annotations

import os
import selectors
import socket
import threading

import pytest

from socketsvc import protocol
from socketsvc.methods.dispatch import Outcome
from socketsvc.server.connection import Connection
from socketsvc.server.loop import State
from tests.harness.daemon import RawClient
from tests.harness.inprocess import serving
from tests.harness.waiting import poll

pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


def request(method: str, params=None, request_id=1) -> dict:
    message = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    return message


# -- the transport, over a socketpair -------------------------------------------


def test_transport_reads_whole_lines_and_keeps_the_partial_one():
    """Bytes arrive in pieces; read() returns complete lines only and keeps the rest."""
    ours, theirs = socket.socketpair()
    with selectors.DefaultSelector() as selector:
        conn = Connection(1, ours, selector, 1024)
        theirs.sendall(b'{"a":1}\n{"b"')
        assert conn.transport.read() == [b'{"a":1}']
        assert conn.transport.framer.pending == 4
        theirs.sendall(b":2}\n")
        assert conn.transport.read() == [b'{"b":2}']
        theirs.close()
        assert conn.transport.read() is None
        assert conn.transport.eof
        conn.transport.close()


def test_transport_write_keeps_what_the_peer_does_not_take_and_asks_for_writability():
    """A write larger than the socket buffer stays queued, with write interest, until flushed."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with selectors.DefaultSelector() as selector:
        conn = Connection(1, ours, selector, 1024)
        assert conn.transport.write(b"x" * 1_000_000)
        assert conn.transport.out
        conn.transport.want_reading(False)
        assert conn.transport.events == selectors.EVENT_WRITE
        received = 0
        theirs.setblocking(False)
        while conn.transport.out:
            try:
                received += len(theirs.recv(1 << 20))
            except BlockingIOError:
                pass
            assert conn.transport.flush()
        received += len(theirs.recv(1 << 20))
        assert received == 1_000_000
        conn.transport.want_reading(True)
        assert conn.transport.events == selectors.EVENT_READ
        conn.transport.close()
        conn.transport.close()  # idempotent
        theirs.close()


def test_transport_reports_a_peer_gone_while_writing():
    """Writing to a peer that closed returns False instead of raising."""
    ours, theirs = socket.socketpair()
    with selectors.DefaultSelector() as selector:
        conn = Connection(1, ours, selector, 1024)
        theirs.close()
        assert conn.transport.write(b"reply\n") is False
        conn.transport.close()


# -- the drain state machine ----------------------------------------------------


def test_drain_answers_what_is_in_flight_then_stops_clean(short_tmp):
    """begin_drain(): the running call's reply arrives, the loop goes DRAINING, then STOPPED."""
    release = threading.Event()
    handlers = {"t.wait": lambda: release.wait(10) and "done"}
    with serving(short_tmp, handlers) as running:
        with RawClient(running.path) as client:
            client.request(request("t.wait"))
            poll(lambda: running.loop.pool.busy == 1)
            running.on_loop(running.loop.begin_drain)
            poll(lambda: running.loop.state is State.DRAINING)
            # The call is still running while the socket's name is gone: a successor may bind.
            poll(lambda: not os.path.exists(running.path))
            assert running.loop.pool.busy == 1
            release.set()
            assert client.reply()["result"] == "done"
            assert client.closed_by_server()
        assert running.wait_stopped() is True
        assert running.loop.state is State.STOPPED


def test_drain_deadline_refuses_waiting_calls_and_reports_unclean(short_tmp):
    """At DRAIN_TIMEOUT a call that never started gets -32004; run() returns False (one ran on)."""
    release = threading.Event()
    handlers = {"t.wait": lambda: release.wait(10) and "done", "t.add": lambda a, b: a + b}
    with serving(short_tmp, handlers, WORKERS=1, DRAIN_TIMEOUT=0.5) as running:
        with RawClient(running.path) as client:
            client.request(request("t.wait", request_id=1))
            poll(lambda: running.loop.pool.busy == 1)
            client.request(request("t.add", [1, 2], request_id=2))
            poll(lambda: running.loop.pool.waiting == 1)
            running.on_loop(running.loop.begin_drain)
            reply = client.reply()
            assert reply["id"] == 2
            assert reply["error"]["code"] == protocol.SHUTTING_DOWN
            assert running.wait_stopped() is False
        release.set()


def test_a_second_stop_request_ends_the_loop_at_once(short_tmp):
    """stop_now() during a drain stops the loop without waiting for the running call."""
    release = threading.Event()
    with serving(short_tmp, {"t.wait": lambda: release.wait(10)}) as running:
        with RawClient(running.path) as client:
            client.request(request("t.wait"))
            poll(lambda: running.loop.pool.busy == 1)
            running.on_loop(running.loop.begin_drain)
            running.on_loop(running.loop.stop_now)
            assert running.wait_stopped() is False
        release.set()


# -- the pool --------------------------------------------------------------------


def test_jobs_queued_behind_a_retiring_workers_sentinel_are_answered(short_tmp):
    """Shrinking the pool while every worker is busy queues a retire sentinel; jobs behind it
    still count as waiting, and at the drain deadline each gets -32004."""
    release = threading.Event()
    handlers = {"t.wait": lambda: release.wait(10) and "done", "t.add": lambda a, b: a + b}
    with serving(short_tmp, handlers, WORKERS=2, DRAIN_TIMEOUT=0.5) as running:
        pool = running.loop.pool
        with RawClient(running.path) as client:
            client.request(request("t.wait", request_id="w1"))
            client.request(request("t.wait", request_id="w2"))
            poll(lambda: pool.busy == 2)
            running.on_loop(lambda: pool.resize(1))
            poll(lambda: pool.size == 1)
            for n in range(3):
                client.request(request("t.add", [n, 1], request_id=n))
            poll(lambda: pool.waiting == 3)
            running.on_loop(running.loop.begin_drain)
            replies = [client.reply() for _ in range(3)]
            assert {reply["id"] for reply in replies} == {0, 1, 2}
            assert {reply["error"]["code"] for reply in replies} == {protocol.SHUTTING_DOWN}
            assert running.wait_stopped() is False  # the two running calls were abandoned
        release.set()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_that_dies_is_replaced_and_its_call_answered(short_tmp, monkeypatch):
    """A worker thread killed by a fault outside any handler answers its call -32603 and is replaced."""
    with serving(short_tmp, {"t.add": lambda a, b: a + b}, WORKERS=1) as running:
        pool = running.loop.pool
        original = pool.dispatcher.execute
        failures = iter([True])

        def execute(call, request_id) -> Outcome:
            if next(failures, False):
                raise SystemExit("a fault the worker cannot survive")
            return original(call, request_id)

        monkeypatch.setattr(pool, "dispatcher", type("D", (), {"execute": staticmethod(execute)}))
        with RawClient(running.path) as client:
            client.request(request("t.add", [1, 1], request_id=1))
            reply = client.reply()
            assert reply["error"]["code"] == protocol.INTERNAL_ERROR
            client.request(request("t.add", [2, 2], request_id=2))
            assert client.reply()["result"] == 4
        assert pool.size == 1


# -- admission -------------------------------------------------------------------
