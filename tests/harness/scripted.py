"""A scripted service: a real Unix socket whose replies a test writes, for what a daemon
cannot be made to do on cue (garbage, a hang, a close) and to see what a client sent."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

HANG = object()
CLOSE = object()
Reply = Callable[[dict[str, Any]], Any]


def result(value: Any) -> Reply:
    return lambda request: {"jsonrpc": "2.0", "id": request["id"], "result": value}


def error(code: int, message: str, data: Any = None) -> Reply:
    body = {"code": code, "message": message, **({"data": data} if data is not None else {})}
    return lambda request: {"jsonrpc": "2.0", "id": request["id"], "error": body}


class ScriptedService:
    """A Unix socket whose every request gets *reply(request)*: a dict, bytes, HANG or CLOSE."""

    def __init__(self, path: str, reply: Reply) -> None:
        self.path = path
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen()
        self.listener.settimeout(0.05)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            request = json.loads(data)
            self.requests.append(request)
            answer = self.reply(request) if "id" in request else None
            if answer is HANG:
                self.held.append(conn)
                continue
            if isinstance(answer, dict):
                conn.sendall(json.dumps(answer).encode() + b"\n")
            elif isinstance(answer, bytes):
                conn.sendall(answer)
            conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.listener.close()
        for conn in self.held:
            conn.close()
