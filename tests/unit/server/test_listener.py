"""The listener lets go of its socket, file and lock once, however often it is closed."""

from __future__ import annotations

import os
import socket

from socketsvc.server.listener import bind_unix_socket


def test_closing_twice_never_closes_a_descriptor_reused_in_between(short_tmp):
    """After close(), an unrelated file may get the lock's descriptor number; a second close()
    (drain start, then service exit) leaves that file open."""
    listener = bind_unix_socket(str(short_tmp / "l.sock"))
    lock_fd = listener.preserved_fds()[1]
    listener.close()
    other = os.open(short_tmp / "unrelated", os.O_CREAT | os.O_RDWR, 0o600)
    if other != lock_fd:
        os.dup2(other, lock_fd)
        os.close(other)
    try:
        listener.close()
        os.fstat(lock_fd)  # still open: the second close touched nothing
    finally:
        os.close(lock_fd)


def test_close_removes_only_its_own_socket_file(short_tmp):
    """A socket file replaced by a successor's is not removed by the predecessor's close()."""
    path = str(short_tmp / "l.sock")
    listener = bind_unix_socket(path)
    os.unlink(path)
    successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    successor.bind(path)
    try:
        listener.close()
        assert os.path.exists(path)
    finally:
        successor.close()
