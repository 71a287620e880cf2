"""Access control: the socket's mode is the first gate, the peer's credentials the second."""

from __future__ import annotations

import json
import os
import pwd

import pytest

from socketsvc import AccessDenied, call, protocol
from socketsvc.conf import build_config
from tests.harness.daemon import Daemon, RawClient
from tests.harness.waiting import poll

NOBODY = 65534

pytestmark = [
    # The forked child makes a few system calls and _exits; it takes no lock.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


@pytest.fixture
def root() -> None:
    """Connecting as another user needs root: fail (never skip) without it."""
    if os.getuid() != 0:
        pytest.fail("this test connects as other users: run the suite as root (make test)")


def as_nobody(path: str) -> dict:
    """Connect from a forked child running as uid/gid 65534; return what it saw."""
    return as_user(path, NOBODY, NOBODY)


def as_user(path: str, uid: int, gid: int, groups: tuple[int, ...] = ()) -> dict:
    """Connect from a forked child running as *uid*/*gid* (and supplementary *groups*, as
    systemd's SupplementaryGroups= gives them); return what it saw."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only plain system calls, then _exit
        result: dict = {}
        try:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            try:
                client = RawClient(path, timeout=10)
            except PermissionError:
                result["connect"] = "EACCES"
            else:
                result["connect"] = "ok"
                try:
                    client.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": 1})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused and closed before the request went out: read why

                try:
                    result["reply"] = client.reply()
                    result["closed"] = client.closed_by_server()
                except (EOFError, OSError) as exc:
                    result["error"] = repr(exc)
        except BaseException as exc:
            result["error"] = repr(exc)
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def reachable_dir(short_tmp):
    """The socket directory, traversable by other users (the file mode is what is tested)."""
    os.chmod(short_tmp, 0o755)
    return short_tmp


def start(reachable_dir, sqlite_url, launch, mode: str, **settings) -> Daemon:
    """Start a daemon; wait until it answers (or, when it would refuse this very user, until
    its log says it is ready)."""
    daemon = launch(
        str(reachable_dir / "a.sock"),
        {"DATABASE_URL": sqlite_url},
        "--socket-mode",
        mode,
        settings=settings,
    )
    refuses_me = os.getuid() not in settings.get("ALLOWED_UIDS", [os.getuid()])
    if refuses_me:
        daemon.start(wait=False)
        poll(lambda: any(e.get("event") == "ready" for e in daemon.log_events()), why=daemon.log)
        return daemon
    return daemon.start()


def test_socket_mode_keeps_other_users_out(root, reachable_dir, sqlite_url, launch):
    """With mode 0660 owned by root, uid 65534 cannot even connect (EACCES)."""
    daemon = start(reachable_dir, sqlite_url, launch, "660")
    assert as_nobody(daemon.socket) == {"connect": "EACCES"}
    assert daemon.call("rpc.ping") == "pong"


def test_peer_credentials_refuse_a_user_not_allowed(root, reachable_dir, sqlite_url, launch):
    """Past an open socket mode, uid 65534 gets -32005, is disconnected, and the refusal is logged."""
    daemon = start(reachable_dir, sqlite_url, launch, "666")
    seen = as_nobody(daemon.socket)
    assert seen["connect"] == "ok"
    assert seen["reply"]["error"]["code"] == protocol.ACCESS_DENIED
    assert seen["reply"]["id"] is None
    assert seen["closed"] is True
    refusals = [e for e in daemon.log_events() if e["event"] == "connection_refused"]
    assert refusals[0]["reason"] == "access_denied"
    assert refusals[0]["peer_uid"] == NOBODY
    assert refusals[0]["peer_gid"] == NOBODY
    assert refusals[0]["peer_pid"] > 0
    assert daemon.call("rpc.ping") == "pong"  # root (the daemon's own uid) is served


def test_an_allowed_uid_is_served(root, reachable_dir, sqlite_url, launch):
    """A uid listed in ALLOWED_UIDS is served."""
    daemon = start(reachable_dir, sqlite_url, launch, "666", ALLOWED_UIDS=[0, NOBODY])
    seen = as_nobody(daemon.socket)
    assert seen["reply"] == {"jsonrpc": "2.0", "id": 1, "result": "pong"}


def test_a_uid_above_2_to_the_31_is_read_unsigned(root, reachable_dir, sqlite_url, launch):
    """uid_t is unsigned: a peer with uid 3,000,000,000 is that uid, and allowed when listed."""
    big = 3_000_000_000
    daemon = start(reachable_dir, sqlite_url, launch, "666", ALLOWED_UIDS=[0, big])
    seen = as_user(daemon.socket, big, big)
    assert seen["reply"] == {"jsonrpc": "2.0", "id": 1, "result": "pong"}
    assert daemon.call("testapp.add", 1, 1) == 2


def test_an_allowed_group_is_served(root, reachable_dir, sqlite_url, launch):
    """A peer whose group is listed in ALLOWED_GIDS is served."""
    daemon = start(reachable_dir, sqlite_url, launch, "666", ALLOWED_GIDS=[NOBODY])
    seen = as_nobody(daemon.socket)
    assert seen["reply"]["result"] == "pong"
    [allowed] = daemon.call("rpc.status")["access"]["gids"]
    assert str(NOBODY) in allowed


def test_a_supplementary_group_the_group_database_does_not_list_is_served(
    root, reachable_dir, sqlite_url, launch
):
    """A peer given a group only in its process (systemd's SupplementaryGroups=, setgroups()),
    which /etc/group does not list for its user, is served when that group is allowed: the
    kernel's account of the peer's groups (SO_PEERGROUPS) decides, not the group database."""
    extra = 4242
    assert extra not in os.getgrouplist(pwd.getpwuid(NOBODY).pw_name, NOBODY)
    daemon = start(reachable_dir, sqlite_url, launch, "666", ALLOWED_GIDS=[extra])
    seen = as_user(daemon.socket, NOBODY, NOBODY, groups=(extra,))
    assert seen["reply"] == {"jsonrpc": "2.0", "id": 1, "result": "pong"}
    refused = as_user(daemon.socket, NOBODY, NOBODY, groups=(extra + 1,))
    assert refused["reply"]["error"]["code"] == protocol.ACCESS_DENIED


def test_a_uid_not_allowed_is_refused_whoever_runs_the_suite(reachable_dir, sqlite_url, launch):
    """ALLOWED_UIDS without this uid and no ALLOWED_GIDS: this very user gets -32005 and is
    disconnected (runs unprivileged: no other user needed)."""
    daemon = start(reachable_dir, sqlite_url, launch, "600", ALLOWED_UIDS=[NOBODY], ALLOWED_GIDS=[])
    with RawClient(daemon.socket) as client:
        # Refused on accept, before anything is read: the reply comes unasked (sending
        # first could meet the closed connection).
        reply = client.reply()
        assert reply["error"]["code"] == protocol.ACCESS_DENIED
        assert reply["id"] is None
        assert client.closed_by_server()
    refusals = [e for e in daemon.log_events() if e["event"] == "connection_refused"]
    assert refusals[0]["peer_uid"] == os.getuid()


def test_a_users_own_group_lets_it_in_whoever_runs_the_suite(reachable_dir, sqlite_url, launch):
    """ALLOWED_UIDS without this uid, ALLOWED_GIDS with its primary group: it is served."""
    daemon = start(
        reachable_dir, sqlite_url, launch, "600", ALLOWED_UIDS=[NOBODY], ALLOWED_GIDS=[os.getgid()]
    )
    with RawClient(daemon.socket) as client:
        client.request({"jsonrpc": "2.0", "method": "rpc.ping", "id": 1})
        assert client.reply() == {"jsonrpc": "2.0", "id": 1, "result": "pong"}


def test_abstract_socket_names_are_rejected_in_configuration():
    """An abstract socket name is refused by the settings validation."""
    for name in ("@socketsvc", "\0socketsvc"):
        with pytest.raises(Exception, match="abstract socket"):
            build_config({"SOCKET": name})


def test_nobody_exists_here():
    """The uid the tests drop to exists on this machine (sanity check for the tests above)."""
    assert pwd.getpwuid(NOBODY).pw_name


def test_client_raises_access_denied_for_a_refused_user(root, reachable_dir, sqlite_url, launch):
    """call() from a refused user raises AccessDenied (the refusal arrives with id null)."""
    daemon = start(reachable_dir, sqlite_url, launch, "666")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        outcome = "no exception"
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            call("rpc.ping", socket=daemon.socket, timeout=10)
        except AccessDenied as exc:
            outcome = f"AccessDenied {exc.code}"
        except BaseException as exc:
            outcome = repr(exc)
        os.write(write_end, outcome.encode())
        os._exit(0)
    os.close(write_end)
    outcome = os.read(read_end, 4096).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert outcome == f"AccessDenied {protocol.ACCESS_DENIED}"
