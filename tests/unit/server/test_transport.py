"""A worker thread's direct send of a reply (Transport.send_now), on a real socket pair."""

from __future__ import annotations

import selectors
import socket

import pytest

from socketsvc.server.transport import Transport


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    selector = selectors.DefaultSelector()
    transport = Transport(ours, selector, 1024, owner=None)
    yield transport, theirs
    transport.close()
    theirs.close()
    selector.close()


def test_a_reply_with_nothing_queued_goes_out_at_once(pair):
    transport, peer = pair
    assert transport.send_now(b'{"id": 1}\n')
    assert peer.recv(100) == b'{"id": 1}\n'
    assert transport.out == b""


def test_a_reply_behind_queued_bytes_is_left_to_the_loop(pair):
    """Bytes queued first must go first: the direct send refuses, nothing is written."""
    transport, peer = pair
    transport.out += b"queued\n"
    assert not transport.send_now(b"second\n")
    assert transport.out == b"queued\n"
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)


def test_what_a_full_socket_does_not_take_is_queued_in_order(pair):
    transport, peer = pair
    big = b"x" * (4 * 1024 * 1024) + b"\n"
    assert transport.send_now(big)
    assert 0 < len(transport.out) < len(big)
    assert not transport.send_now(b"after\n")  # behind the rest: the loop's turn
    received = bytearray()
    peer.settimeout(5)
    while len(received) < len(big):
        received += peer.recv(1 << 20)
        transport.flush()
    assert bytes(received) == big


def test_a_closed_transport_sends_nothing(pair):
    """Closed by the loop (the number may be reused by then): never written to."""
    transport, _ = pair
    transport.close()
    assert not transport.send_now(b"late\n")
    assert not transport.write(b"late\n")


def test_a_peer_that_left_makes_the_direct_send_give_way(pair):
    transport, peer = pair
    peer.close()
    assert not transport.send_now(b"nobody\n")
