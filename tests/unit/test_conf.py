"""Validation of the SOCKETSVC settings dict by socketsvc.conf.build_config."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from socketsvc.conf import DEFAULT_SOCKET, MAX_SOCKET_PATH_BYTES, Config, build_config


def test_defaults_when_unset():
    """No SOCKETSVC dict and an empty one both give the documented defaults."""
    assert build_config(None) == Config()
    assert build_config({}) == Config()
    config = build_config(None)
    assert config.SOCKET == DEFAULT_SOCKET
    assert config.SOCKET_MODE == 0o660
    assert config.SOCKET_GROUP is None
    assert config.WORKERS == 4
    assert config.CALL_TIMEOUT == 30.0


def test_valid_values_are_applied():
    """Valid keys override the defaults and leave the others alone."""
    config = build_config(
        {"SOCKET": "/tmp/x.sock", "SOCKET_MODE": 0o600, "SOCKET_GROUP": "www-data", "WORKERS": 2}
    )
    assert (config.SOCKET, config.SOCKET_MODE, config.SOCKET_GROUP, config.WORKERS) == (
        "/tmp/x.sock",
        0o600,
        "www-data",
        2,
    )
    assert config.MAX_QUEUED == Config().MAX_QUEUED


def test_unknown_key_suggests_the_close_match():
    """A misspelt key is an error that names it and suggests the intended key."""
    with pytest.raises(ImproperlyConfigured) as info:
        build_config({"WORKER": 4})
    message = str(info.value)
    assert "'WORKER'" in message
    assert "did you mean 'WORKERS'?" in message


def test_unknown_key_without_close_match_lists_known_keys():
    """An unknown key with no close match is an error that lists the known keys."""
    with pytest.raises(ImproperlyConfigured) as info:
        build_config({"ZZZ_NOTHING": 1})
    message = str(info.value)
    assert "did you mean" not in message
    assert message.startswith("SOCKETSVC has an unknown key 'ZZZ_NOTHING'. Known keys: ")
    assert "SOCKET_MODE" in message
    assert "CALL_TIMEOUT" in message


def test_unknown_key_in_overrides_is_rejected():
    """An unknown key given as a non-None override is an error too."""
    with pytest.raises(ImproperlyConfigured, match="unknown key 'TIMEOUT'"):
        build_config({}, {"TIMEOUT": 3})


@pytest.mark.parametrize("path", ["@x", "\0x", "@/run/x.sock"])
def test_abstract_socket_is_rejected(path):
    """A socket name in the abstract namespace is rejected in favour of a filesystem path."""
    with pytest.raises(ImproperlyConfigured, match="abstract socket"):
        build_config({"SOCKET": path})


@pytest.mark.parametrize("path", ["x.sock", "run/x.sock", "./x.sock", "~/x.sock"])
def test_relative_path_is_rejected(path):
    """A relative socket path is rejected."""
    with pytest.raises(ImproperlyConfigured, match="absolute path"):
        build_config({"SOCKET": path})


def test_empty_or_non_string_path_is_rejected():
    """An empty socket path or one that is not a string is rejected."""
    with pytest.raises(ImproperlyConfigured, match="must not be empty"):
        build_config({"SOCKET": ""})
    with pytest.raises(ImproperlyConfigured, match="path string"):
        build_config({"SOCKET": 5})


def test_path_of_exactly_107_bytes_is_accepted():
    """A socket path of exactly 107 bytes fits sun_path and is accepted."""
    path = "/tmp/" + "a" * (MAX_SOCKET_PATH_BYTES - len("/tmp/"))
    assert len(path) == 107
    assert path == build_config({"SOCKET": path}).SOCKET


def test_path_over_107_bytes_is_rejected():
    """A socket path of 108 bytes is rejected with its length in the message."""
    path = "/tmp/" + "a" * (MAX_SOCKET_PATH_BYTES + 1 - len("/tmp/"))
    with pytest.raises(ImproperlyConfigured, match="108 bytes"):
        build_config({"SOCKET": path})


def test_path_length_counts_encoded_bytes_not_characters():
    """A path of few characters but more than 107 UTF-8 bytes is rejected."""
    path = "/tmp/" + "\u00e9" * 60
    assert len(path) < MAX_SOCKET_PATH_BYTES < len(path.encode())
    with pytest.raises(ImproperlyConfigured, match="at most 107"):
        build_config({"SOCKET": path})


@pytest.mark.parametrize("mode", ["0o660", "660", 432.0, None, True, -1, 0o1000, 0o4660])
def test_socket_mode_must_be_an_int_permission_mode(mode):
    """SOCKET_MODE that is not an int in 0..0o777 (str, float, None, bool, setuid) is rejected."""
    with pytest.raises(ImproperlyConfigured, match="permission mode"):
        build_config({"SOCKET_MODE": mode})


@pytest.mark.parametrize("mode", [0o440, 0o444, 0o000, 0o077])
def test_socket_mode_without_owner_write_is_rejected(mode):
    """SOCKET_MODE that does not let the owner write is rejected: no one could connect."""
    with pytest.raises(ImproperlyConfigured, match="owner write"):
        build_config({"SOCKET_MODE": mode})


@pytest.mark.parametrize("mode", [0o200, 0o600, 0o660, 0o777])
def test_socket_mode_with_owner_write_is_accepted(mode):
    """Any mode up to 0o777 with the owner write bit is accepted."""
    assert mode == build_config({"SOCKET_MODE": mode}).SOCKET_MODE


@pytest.mark.parametrize("workers", [0, -1, 1025, 2.0, "4", True])
def test_workers_out_of_range_or_wrong_type_is_rejected(workers):
    """WORKERS outside 1..1024 or not an int is rejected with the range in the message."""
    with pytest.raises(ImproperlyConfigured, match="between 1 and 1024"):
        build_config({"WORKERS": workers})


@pytest.mark.parametrize("workers", [1, 1024])
def test_workers_range_bounds_are_accepted(workers):
    """WORKERS at either bound of 1..1024 is accepted."""
    assert workers == build_config({"WORKERS": workers}).WORKERS


@pytest.mark.parametrize("key", ["MAX_QUEUED", "MAX_CONNECTIONS", "BACKLOG", "MAX_MESSAGE_BYTES"])
def test_bool_is_rejected_where_an_int_is_expected(key):
    """True is not accepted as the integer 1 for an int setting."""
    with pytest.raises(ImproperlyConfigured, match=key):
        build_config({key: True})


@pytest.mark.parametrize(
    "key", ["IDLE_TIMEOUT", "DRAIN_TIMEOUT", "CALL_TIMEOUT", "DB_CHECK_AFTER_IDLE"]
)
@pytest.mark.parametrize("value", [-1, -0.5, True, "5", None])
def test_negative_or_non_numeric_timeouts_are_rejected(key, value):
    """A timeout that is negative, a bool, a string or None inside SOCKETSVC is rejected."""
    with pytest.raises(ImproperlyConfigured, match=key):
        build_config({key: value})


@pytest.mark.parametrize("key", ["IDLE_TIMEOUT", "DRAIN_TIMEOUT", "CALL_TIMEOUT"])
def test_zero_timeout_is_rejected_where_it_would_mean_no_time(key):
    """A zero idle, drain or call timeout is rejected."""
    with pytest.raises(ImproperlyConfigured, match="greater than 0"):
        build_config({key: 0})


def test_timeouts_accept_ints_and_floats_and_become_floats():
    """Timeouts given as ints are stored as floats; DB_CHECK_AFTER_IDLE may be 0."""
    config = build_config({"CALL_TIMEOUT": 5, "DRAIN_TIMEOUT": 0.25, "DB_CHECK_AFTER_IDLE": 0})
    assert config.CALL_TIMEOUT == 5.0
    assert isinstance(config.CALL_TIMEOUT, float)
    assert config.DRAIN_TIMEOUT == 0.25
    assert config.DB_CHECK_AFTER_IDLE == 0.0


@pytest.mark.parametrize("group", [0, 33, "www-data", None])
def test_socket_group_accepts_name_gid_or_none(group):
    """SOCKET_GROUP may be a group name, a gid or None."""
    assert group == build_config({"SOCKET_GROUP": group}).SOCKET_GROUP


@pytest.mark.parametrize("group", ["", True, 1.5, ["www-data"]])
def test_socket_group_rejects_other_values(group):
    """SOCKET_GROUP that is empty, a bool, a float or a list is rejected."""
    with pytest.raises(ImproperlyConfigured, match="SOCKET_GROUP"):
        build_config({"SOCKET_GROUP": group})


def test_none_overrides_are_ignored():
    """Overrides whose value is None leave the settings value (or default) in place."""
    config = build_config(
        {"WORKERS": 3, "SOCKET": "/tmp/a.sock"},
        {"WORKERS": None, "SOCKET": None, "CALL_TIMEOUT": None},
    )
    assert config.WORKERS == 3
    assert config.SOCKET == "/tmp/a.sock"
    assert config.CALL_TIMEOUT == Config().CALL_TIMEOUT


def test_non_none_overrides_win_and_are_validated():
    """A non-None override replaces the settings value and is validated like it."""
    assert build_config({"WORKERS": 3}, {"WORKERS": 8}).WORKERS == 8
    with pytest.raises(ImproperlyConfigured, match="WORKERS"):
        build_config({"WORKERS": 3}, {"WORKERS": 0})
    with pytest.raises(ImproperlyConfigured, match="absolute path"):
        build_config({}, {"SOCKET": "relative.sock"})


@pytest.mark.parametrize("value", [[("WORKERS", 2)], "WORKERS=2", 5, ("a",)])
def test_socketsvc_that_is_not_a_dict_is_rejected(value):
    """SOCKETSVC that is not a mapping is rejected, naming the type it got."""
    with pytest.raises(ImproperlyConfigured, match=f"must be a dict, not {type(value).__name__}"):
        build_config(value)
