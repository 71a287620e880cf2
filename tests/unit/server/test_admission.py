"""Which idle connection makes room at a cap: real connections on socket pairs."""

from __future__ import annotations

import selectors
import socket

import pytest

from socketsvc.server.admission import Admission
from socketsvc.server.connection import Connection


@pytest.fixture
def connections():
    selector = selectors.DefaultSelector()
    made: list[tuple[Connection, socket.socket]] = []

    def make() -> Connection:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        conn = Connection(len(made), ours, selector, 1024)
        made.append((conn, theirs))
        return conn

    yield make
    for conn, theirs in made:
        conn.transport.close()
        theirs.close()
    selector.close()


def test_the_idlest_is_the_one_whose_reply_went_out_first_not_the_last_bookkept(connections):
    """A worker sends a reply itself and the loop does its bookkeeping a moment later; another
    connection may be served in between. Eviction goes by when each was last active."""
    admission = Admission()
    first, second = connections(), connections()
    admission.admit(first)
    admission.admit(second)
    assert first.transport.send_now(b'{"id": 1}\n')  # the worker answers the first
    admission.touch(second)  # the loop reads the second's request ...
    assert second.transport.send_now(b'{"id": 2}\n')  # ... and it is answered too
    admission.touch(first)  # only now the first's bookkeeping reaches the loop
    assert admission.idlest() is first
    assert admission.idlest(first.peer.uid) is first


def test_a_connection_with_a_call_in_flight_is_never_the_idlest(connections):
    admission = Admission()
    busy, quiet = connections(), connections()
    admission.admit(busy)
    admission.admit(quiet)
    busy.pending = 1
    assert admission.idlest() is quiet
    quiet.pending = 1
    assert admission.idlest() is None
