"""socketsvc.client and ``manage.py socketctl`` against a real daemon subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from socketsvc.client import (
    CallTimeout,
    HandlerError,
    InvalidParams,
    MethodNotFound,
    RemoteError,
    ServiceUnavailable,
    SocketServiceError,
    call,
    call_with,
    notify,
)
from tests.harness.daemon import manage
from tests.harness.waiting import poll

# -- helpers ----------------------------------------------------------------


def socketctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py socketctl ARGS`` in a subprocess and capture its output."""
    return manage("socketctl", *args, timeout=timeout)


@pytest.fixture
def silent_listener(sock_path: str) -> Iterator[str]:
    """A socket that accepts connections (into its backlog) and never replies."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(8)
    yield sock_path
    server.close()


# -- client: results ----------------------------------------------------------


def test_call_returns_the_result_for_positional_and_named_params(sqlite_daemon):
    """call() returns the handler's result for positional and for named params."""
    path = sqlite_daemon.socket
    assert call("testapp.add", 2, 3, socket=path, timeout=10) == 5
    assert call("testapp.add", a=2, b=40, socket=path, timeout=10) == 42
    assert call("custom.named", socket=path, timeout=10) == "named"
    assert call("rpc.ping", socket=path, timeout=10) == "pong"


def test_call_with_passes_params_named_like_call_options(sqlite_daemon):
    """call_with() sends a params object even when its keys are "timeout" or "socket"."""
    result = call_with(
        "testapp.echo", {"timeout": 1, "socket": "x"}, socket=sqlite_daemon.socket, timeout=10
    )
    assert result == {"args": [], "kwargs": {"timeout": 1, "socket": "x"}}
    assert call_with("testapp.echo", [1, "a\nb"], socket=sqlite_daemon.socket, timeout=10) == {
        "args": [1, "a\nb"],
        "kwargs": {},
    }


def test_call_reaches_the_migrated_shop_database(sqlite_daemon):
    """A shop handler answers from the daemon's migrated database with its demo products."""
    result = call("shop.restock", sku="MUG-01", quantity=2, socket=sqlite_daemon.socket, timeout=10)
    assert result == {"sku": "MUG-01", "added": 2, "stock": 5}


# -- client: typed failures -----------------------------------------------------


def test_no_socket_file_is_service_unavailable_not_running(sock_path):
    """call() and notify() to a path with no socket file raise ServiceUnavailable("not_running")."""
    assert not os.path.exists(sock_path)
    with pytest.raises(ServiceUnavailable) as info:
        call("rpc.ping", socket=sock_path, timeout=5)
    assert info.value.reason == "not_running"
    assert info.value.path == sock_path
    assert sock_path in str(info.value)
    with pytest.raises(ServiceUnavailable) as info:
        notify("rpc.ping", socket=sock_path, timeout=5)
    assert info.value.reason == "not_running"


def test_stale_socket_file_is_service_unavailable_refused(sock_path):
    """A socket file nobody listens on (left behind by a dead process) gives reason "refused"."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()
    assert os.path.exists(sock_path)
    with pytest.raises(ServiceUnavailable) as info:
        call("rpc.ping", socket=sock_path, timeout=5)
    assert info.value.reason == "refused"
    assert info.value.path == sock_path


def test_silent_listener_is_call_timeout_within_the_timeout(silent_listener):
    """A listener that never replies makes call() raise CallTimeout once the timeout has passed."""
    started = time.monotonic()
    with pytest.raises(CallTimeout) as info:
        call("rpc.ping", socket=silent_listener, timeout=0.4)
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 3.0
    assert silent_listener in str(info.value)
    assert isinstance(info.value, SocketServiceError)


def test_slow_handler_is_call_timeout(sqlite_daemon):
    """A handler slower than the timeout makes call() raise CallTimeout, not hang."""
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        call("testapp.sleep", seconds=3.0, socket=sqlite_daemon.socket, timeout=0.3)
    assert time.monotonic() - started < 2.5


def test_unknown_method_raises_method_not_found(sqlite_daemon):
    """An unknown method raises MethodNotFound carrying code -32601 and the method name."""
    with pytest.raises(MethodNotFound) as info:
        call("testapp.no_such_method", socket=sqlite_daemon.socket, timeout=10)
    assert info.value.code == -32601
    assert "testapp.no_such_method" in info.value.message
    assert info.value.error_type is None


def test_bad_params_raise_invalid_params(sqlite_daemon):
    """Params that do not fit the signature raise InvalidParams naming the parameter."""
    with pytest.raises(InvalidParams) as info:
        call("testapp.add", a="two", socket=sqlite_daemon.socket, timeout=10)
    assert info.value.code == -32602
    assert "'a'" in info.value.message
    assert info.value.data == {"parameter": "a"}
    with pytest.raises(InvalidParams) as info:
        call("testapp.add", b=1, socket=sqlite_daemon.socket, timeout=10)
    assert "'a'" in info.value.message


def test_handler_exception_raises_handler_error_without_traceback(sqlite_daemon):
    """A handler that raises gives HandlerError with its type and message, and no traceback."""
    with pytest.raises(HandlerError) as info:
        call("testapp.fail", message="kaput", socket=sqlite_daemon.socket, timeout=10)
    error = info.value
    assert error.code == -32000
    assert error.error_type == "RuntimeError"
    assert "kaput" in error.message
    assert error.data == {
        "type": "RuntimeError",
        "message": "kaput",
        "request_id": error.data["request_id"],
        "pid": sqlite_daemon.pid,
    }
    assert isinstance(error.data["request_id"], int)
    text = json.dumps(error.data)
    assert "Traceback" not in text
    assert "handlers.py" not in text
    assert 'File "' not in text


def test_custom_error_code_raises_generic_remote_error(sqlite_daemon):
    """An RPCError with an application code (1001) arrives as a plain RemoteError with its data."""
    with pytest.raises(RemoteError) as info:
        call("shop.restock", sku="NOPE", socket=sqlite_daemon.socket, timeout=10)
    error = info.value
    assert type(error) is RemoteError
    assert error.code == 1001
    assert error.message == "No product with SKU 'NOPE'"
    assert error.data == {"sku": "NOPE"}


def test_daemon_keeps_serving_after_errors(sqlite_daemon):
    """Remote errors do not disturb the daemon: the next call succeeds."""
    for method in ("testapp.fail", "testapp.nope"):
        with pytest.raises(RemoteError):
            call(method, socket=sqlite_daemon.socket, timeout=10)
    assert call("testapp.add", 1, 1, socket=sqlite_daemon.socket, timeout=10) == 2


# -- client: notify and argument checks -------------------------------------------


def test_notify_returns_none_and_the_work_happens(sqlite_daemon):
    """notify() returns None at once and the handler still runs on the daemon."""
    marker = f"note-{uuid.uuid4().hex}"
    assert (
        notify("testapp.write_note", text=marker, socket=sqlite_daemon.socket, timeout=10) is None
    )
    assert poll(lambda: sqlite_daemon.call("testapp.count_notes", text=marker) == 1)


def test_notify_with_positional_params_is_delivered(sqlite_daemon):
    """notify() with positional params delivers them too."""
    marker = f"pos-{uuid.uuid4().hex}"
    assert notify("testapp.write_note", marker, socket=sqlite_daemon.socket, timeout=10) is None
    assert poll(lambda: sqlite_daemon.call("testapp.count_notes", marker) == 1)


def test_call_and_notify_refuse_both_args_and_kwargs(sock_path):
    """call() and notify() with both positional and named params raise TypeError before sending."""
    with pytest.raises(TypeError, match="either positional or named"):
        call("testapp.add", 1, b=2, socket=sock_path, timeout=1)
    with pytest.raises(TypeError, match="either positional or named"):
        notify("testapp.add", 1, b=2, socket=sock_path, timeout=1)


def test_non_json_params_raise_type_error_before_connecting(sock_path):
    """Params JSON cannot carry raise TypeError, not a connection error."""
    with pytest.raises(TypeError, match=r"testapp.echo must be JSON: params\[0\] is an object"):
        call("testapp.echo", object(), socket=sock_path, timeout=1)
    with pytest.raises(TypeError, match=r"must be JSON: x is a non-finite float \(nan\)"):
        notify("testapp.echo", x=float("nan"), socket=sock_path, timeout=1)


# -- manage.py socketctl -------------------------------------------------------


def test_socketctl_ping(sqlite_daemon):
    """`socketctl ping` exits 0 and prints the JSON string "pong"."""
    done = socketctl("--socket", sqlite_daemon.socket, "ping")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "pong"


def test_socketctl_call_with_key_value_and_json_array(sqlite_daemon):
    """`socketctl call testapp.add` prints 5 for a=2 b=3 and for the JSON array [2, 3]."""
    named = socketctl("--socket", sqlite_daemon.socket, "call", "testapp.add", "a=2", "b=3")
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout) == 5
    positional = socketctl("--socket", sqlite_daemon.socket, "call", "testapp.add", "[2, 3]")
    assert positional.returncode == 0, positional.stderr
    assert json.loads(positional.stdout) == 5


def test_socketctl_call_parses_values_as_json_when_they_can(sqlite_daemon):
    """key=value values are parsed as JSON when they can be, else kept as strings."""
    done = socketctl(
        "--socket", sqlite_daemon.socket, "call", "testapp.echo", "name=bob", "n=3", "xs=[1,2]"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"args": [], "kwargs": {"name": "bob", "n": 3, "xs": [1, 2]}}
    done = socketctl("--socket", sqlite_daemon.socket, "call", "testapp.echo", '{"k": null}')
    assert json.loads(done.stdout) == {"args": [], "kwargs": {"k": None}}


def test_socketctl_remote_error_exits_1_with_the_json_error(sqlite_daemon):
    """A remote error makes socketctl exit 1 and print the JSON error object."""
    done = socketctl("--socket", sqlite_daemon.socket, "call", "testapp.fail", "message=kaput")
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["code"] == -32000
    assert error["data"]["type"] == "RuntimeError"
    assert error["data"]["message"] == "kaput"
    assert "kaput" in error["message"]


def test_socketctl_unreachable_exits_2(sock_path):
    """With --socket pointing to a missing path, socketctl exits 2 and says it is not running."""
    done = socketctl("--socket", sock_path, "--timeout", "5", "ping")
    assert done.returncode == 2, (done.stdout, done.stderr)
    error = json.loads(done.stdout)["error"]
    assert "not running" in error["message"]
    assert sock_path in error["message"]


def test_socketctl_status(sqlite_daemon):
    """`socketctl status` prints the daemon's pid, uptime, request count and busy workers."""
    done = socketctl("--socket", sqlite_daemon.socket, "status")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["pid"] == sqlite_daemon.pid
    assert status["uptime"] >= 0
    assert status["requests"] >= 1
    assert status["busy_workers"] == 0


def test_socketctl_methods_lists_signatures(sqlite_daemon):
    """`socketctl methods` lists testapp.add with its signature and doc, plus the builtins."""
    done = socketctl("--socket", sqlite_daemon.socket, "methods")
    assert done.returncode == 0, done.stderr
    methods = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert methods["testapp.add"] == {
        "name": "testapp.add",
        "signature": "testapp.add(a: int, b: int = 0) -> int",
        "doc": "Add two integers.",
    }
    assert {"rpc.ping", "rpc.status", "rpc.methods", "shop.restock", "custom.named"} <= set(methods)


def test_connect_waits_while_the_backlog_is_full_then_times_out(sock_path):
    """A service whose listen backlog is full makes call() wait for room until its timeout,
    then raise CallTimeout, rather than fail at once as if nothing listened."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(0)
    queued = []
    try:
        while True:  # fill the backlog
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.setblocking(False)
            try:
                probe.connect(sock_path)
            except BlockingIOError:
                probe.close()
                break
            queued.append(probe)
        started = time.monotonic()
        with pytest.raises(CallTimeout, match="backlog"):
            call("rpc.ping", socket=sock_path, timeout=0.5)
        assert time.monotonic() - started >= 0.45
    finally:
        for probe in queued:
            probe.close()
        listener.close()
