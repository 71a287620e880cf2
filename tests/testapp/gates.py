"""Waiting at a test's gate (tests/harness/gate.py), for the handlers and tasks that need to."""

from __future__ import annotations

import socket


def wait_at(gate: str, timeout: float = 60.0) -> None:
    """Connect to the gate's socket and wait for the byte that opens it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(gate)
        sock.recv(1)
