"""A proxy between daemons and a database server that breaks a connection right after the
server committed a claim, before the reply reaches the client: the commit in doubt.

In a test, ``CommitCut(...)`` runs in the test's process; the fault campaign runs it as a
process of its own (``python -m tests.harness.commitcut``), armed by SIGUSR1, printing each cut.

It forwards a Unix socket to the server's. Once armed, it watches what clients send
(MySQL packets, PostgreSQL messages): on a connection whose transaction locked rows with
``SKIP LOCKED`` and then updated the task table (a claim that took a task), the next
``COMMIT`` goes to the server, and the server's reply is dropped with the connection.
The server committed; the client sees its connection lost. It cuts once per arming.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path


class CommitCut:
    """Listen on *path*; forward every connection to the server's socket at *upstream*."""

    def __init__(
        self,
        path: Path | str,
        upstream: Path | str,
        vendor: str,
        on_cut: Callable[[int, str, str], None] | None = None,
    ) -> None:
        self.path, self.upstream, self.vendor = str(path), str(upstream), vendor
        self.on_cut = on_cut
        self.cuts = 0
        self._armed = threading.Event()
        self._cut_done = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        os.chmod(self.path, 0o777)
        self._listener.listen(64)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._links: set[_Link] = set()
        threading.Thread(target=self._accept, name="commitcut", daemon=True).start()

    def arm(self) -> None:
        """Cut the next claim's commit (once)."""
        self._cut_done.clear()
        self._armed.set()

    def wait_for_cut(self, timeout: float = 30.0) -> None:
        """Return once a claim's commit was cut; fail after *timeout*."""
        assert self._cut_done.wait(timeout), "no claim's commit was cut"

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            links = list(self._links)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for link in links:
            link.shut()

    def __enter__(self) -> CommitCut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- forwarding ----------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                # Closed, or out of descriptors for a moment: never stop accepting otherwise
                # (a proxy that stops accepting hangs every daemon behind it).
                self._closed.wait(0.1)
                continue
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                server.connect(self.upstream)
            except OSError:  # the server is down: so is this connection
                client.close()
                server.close()
                continue
            link = _Link(self, client, server)
            with self._lock:
                if not self._closed.is_set():
                    self._links.add(link)
            if self._closed.is_set():
                client.close()
                server.close()
                return
            threading.Thread(target=link.requests, daemon=True).start()
            threading.Thread(target=link.replies, daemon=True).start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _take_cut(self) -> bool:
        """Return True (once per arming) if this commit is the one to cut."""
        with self._lock:
            if not self._armed.is_set():
                return False
            self._armed.clear()
            return True

    def _cut(self, task_id: str, claimant: str) -> None:
        with self._lock:
            self.cuts += 1
            cuts = self.cuts
        self._cut_done.set()
        if self.on_cut is not None:
            self.on_cut(cuts, task_id, claimant)


class _Link:
    """One client's connection: its messages read one by one, the server's bytes pumped back."""

    def __init__(self, proxy: CommitCut, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.claimed = False  # this transaction locked with SKIP LOCKED, then updated tasks
        self.locked = False
        self.claim = ("", "")  # the task the claim took, and the claimant's worker id
        self.cut_next_reply = threading.Event()
        self._lock = threading.Lock()
        self._pumps = 2  # each direction's thread; the last one to end closes the sockets

    def requests(self) -> None:
        try:
            for message in self._messages():
                self._look_at(message)
                self.server.sendall(message)
        except OSError:
            pass
        finally:
            self.shut()
            self.done()

    def replies(self) -> None:
        try:
            while data := self.server.recv(65536):
                if self.cut_next_reply.is_set():
                    self.proxy._cut(*self.claim)
                    return  # the reply to the commit is dropped with the connection
                self.client.sendall(data)
        except OSError:
            pass
        finally:
            self.shut()
            self.done()

    def shut(self) -> None:
        """End both directions (each pump then sees the end and stops)."""
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def done(self) -> None:
        """A pump ended; once both have, close the sockets and let the proxy forget it."""
        with self._lock:
            self._pumps -= 1
            last = self._pumps == 0
        if last:
            self.client.close()
            self.server.close()
            self.proxy._forget(self)

    def _look_at(self, message: bytes) -> None:
        text = message.upper()
        if b"SKIP LOCKED" in text:
            self.locked = True
        elif self.locked and b"UPDATE" in text and b"SOCKETSVC_TASK" in text:
            self.claimed = True
            self.claim = _claim_of(message)
        elif _is_commit(message, self.proxy.vendor):
            if self.claimed and self.proxy._take_cut():
                self.cut_next_reply.set()
            self.locked = self.claimed = False

    def _messages(self):  # type: ignore[no-untyped-def]
        """Yield whole messages as the client sends them."""
        buffer = b""
        vendor = self.proxy.vendor
        started = False  # PostgreSQL's first message has no type byte
        while True:
            need = _whole(buffer, started, vendor)
            while need is None or len(buffer) < need:
                data = self.client.recv(65536)
                if not data:
                    return
                buffer += data
                need = _whole(buffer, started, vendor)
            yield buffer[:need]
            buffer = buffer[need:]
            started = True  # (libpq asks for no SSL or GSS encryption on a Unix socket)


def _whole(buffer: bytes, started: bool, vendor: str) -> int | None:
    """Return the length of the first message in *buffer*, if its header has arrived."""
    if vendor != "postgresql":  # a MySQL packet: a 3-byte length, a sequence number, the payload
        return None if len(buffer) < 4 else 4 + int.from_bytes(buffer[:3], "little")
    if not started:  # PostgreSQL's startup (or SSL/GSS request): a length, then the body
        return None if len(buffer) < 4 else int(struct.unpack("!I", buffer[:4])[0])
    return None if len(buffer) < 5 else 1 + int(struct.unpack("!I", buffer[1:5])[0])


# The claim's UPDATE, its values written into the text (mysqlclient and Django's psycopg
# cursors interpolate on the client): the claimant (host-pid-suffix) and the task's id.
_CLAIMANT = re.compile(rb"claimed_by\W*\s*=\s*'([^']+)'", re.IGNORECASE)
_TASK_ID = re.compile(rb"\bid\W*\s*=\s*'([0-9a-f]{32})'", re.IGNORECASE)


def _claim_of(message: bytes) -> tuple[str, str]:
    claimant, task = _CLAIMANT.search(message), _TASK_ID.search(message)
    return (
        task.group(1).decode() if task else "",
        claimant.group(1).decode() if claimant else "",
    )


def _is_commit(message: bytes, vendor: str) -> bool:
    if vendor != "postgresql":
        return message[4:].rstrip(b"\x00").upper() in (b"\x03COMMIT",)
    return message[:1] == b"Q" and message[5:].rstrip(b"\x00").strip().upper() == b"COMMIT"


def main(argv: list[str] | None = None) -> int:
    """Run the proxy as a process of its own: SIGUSR1 arms it; each cut prints a line."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="python -m tests.harness.commitcut", description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--vendor", required=True)
    options = parser.parse_args(argv)
    proxy = CommitCut(
        options.listen,
        options.upstream,
        options.vendor,
        on_cut=lambda cuts, task, claimant: print(
            f"cut {cuts} {time.time():.6f} {task} {claimant}", flush=True
        ),
    )
    stop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: proxy.arm())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("listening", flush=True)
    stop.wait()
    proxy.close()
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
