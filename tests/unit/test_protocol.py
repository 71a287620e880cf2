"""Pure tests of socketsvc.protocol: line framing, JSON-RPC 2.0 parsing and encoding."""

from __future__ import annotations

import json

import pytest

from socketsvc import protocol
from socketsvc.protocol import (
    INVALID_REQUEST,
    PARSE_ERROR,
    Batch,
    LineFramer,
    MessageTooLarge,
    Request,
    encode,
    parse,
)

# -- LineFramer ---------------------------------------------------------------


def test_feed_splits_several_lines_in_one_chunk():
    """One chunk holding several terminated lines yields each line without its terminator."""
    framer = LineFramer(100)
    assert framer.feed(b'{"a":1}\n{"b":2}\n[3]\n') == [b'{"a":1}', b'{"b":2}', b"[3]"]
    assert framer.pending == 0


def test_partial_line_is_kept_across_feeds():
    """A line split across feeds is returned once, when its terminator arrives."""
    framer = LineFramer(100)
    assert framer.feed(b'{"jsonrpc":') == []
    assert framer.pending == len(b'{"jsonrpc":')
    assert framer.feed(b'"2.0"}\n{"nex') == [b'{"jsonrpc":"2.0"}']
    assert framer.pending == len(b'{"nex')
    assert framer.feed(b't":1}\n') == [b'{"next":1}']
    assert framer.pending == 0


def test_byte_at_a_time_feed_yields_the_same_lines():
    """Feeding one byte at a time yields exactly the lines a single feed would."""
    stream = b'{"a":1}\n\n{"b":"x y"}\r\n[1,2]\n'
    framer = LineFramer(100)
    lines: list[bytes] = []
    for i in range(len(stream)):
        lines += framer.feed(stream[i : i + 1])
    assert lines == LineFramer(100).feed(stream) == [b'{"a":1}', b'{"b":"x y"}', b"[1,2]"]


def test_blank_and_whitespace_only_lines_are_dropped():
    """Empty lines and lines holding only whitespace produce no message."""
    framer = LineFramer(100)
    assert framer.feed(b"\n\n   \n\t\n\r\n{}\n\n") == [b"{}"]


def test_crlf_terminator_is_stripped():
    """A line ending in CRLF is returned without the carriage return."""
    framer = LineFramer(100)
    assert framer.feed(b'{"a":1}\r\n[2]\r') == [b'{"a":1}']
    assert framer.feed(b"\n") == [b"[2]"]


def test_line_of_exactly_max_bytes_is_accepted():
    """A line whose length equals the limit is not oversize."""
    framer = LineFramer(64)
    assert framer.feed(b"x" * 64 + b"\n") == [b"x" * 64]


def test_unterminated_partial_over_max_raises():
    """An unterminated partial line that grows past the limit raises MessageTooLarge."""
    framer = LineFramer(64)
    assert framer.feed(b"x" * 64) == []
    with pytest.raises(MessageTooLarge) as info:
        framer.feed(b"x")
    assert info.value.limit == 64


def test_complete_line_over_max_in_one_chunk_raises():
    """A terminated line longer than the limit, arriving in one chunk, raises MessageTooLarge."""
    framer = LineFramer(64)
    with pytest.raises(MessageTooLarge):
        framer.feed(b"[1]\n" + b"x" * 65 + b"\n[2]\n")


def test_oversize_tail_after_complete_lines_raises():
    """A chunk with good lines followed by an oversize unterminated tail raises MessageTooLarge."""
    framer = LineFramer(64)
    with pytest.raises(MessageTooLarge):
        framer.feed(b"[1]\n" + b"y" * 65)


def test_reading_at_most_room_never_buffers_more_than_max_plus_one():
    """A reader that takes at most room() bytes per read never holds more than max+1 bytes."""
    limit = 100
    framer = LineFramer(limit)
    stream = b"z" * 10_000  # one endless line
    offset = 0
    highest = 0
    with pytest.raises(MessageTooLarge):
        while offset < len(stream):
            room = framer.room()
            assert room >= 1
            chunk = stream[offset : offset + min(room, 37)]
            offset += len(chunk)
            highest = max(highest, framer.pending + len(chunk))
            framer.feed(chunk)
    assert highest <= limit + 1
    assert offset <= limit + 1


def test_room_shrinks_with_pending_and_stays_positive_after_successful_feeds():
    """room() is max+1 minus the buffered partial, and at least 1 after any accepted feed."""
    framer = LineFramer(10)
    assert framer.room() == 11
    framer.feed(b"abc")
    assert framer.room() == 8
    framer.feed(b"defghij")
    assert framer.pending == 10
    assert framer.room() == 1
    framer.feed(b"\n")
    assert framer.room() == 11


def test_lowering_the_limit_spares_the_line_already_buffered():
    """A reload that lowers the limit below a buffered partial line lets that line finish."""
    framer = LineFramer(1000)
    assert framer.feed(b"x" * 900) == []
    framer.max_bytes = 100
    assert framer.room() >= 1
    assert framer.feed(b"y" * 50 + b"\n" + b"z" * 20) == [b"x" * 900 + b"y" * 50]
    assert framer.room() == 100 + 1 - 20  # the next line has the new limit
    with pytest.raises(MessageTooLarge):
        framer.feed(b"z" * 100)


def test_raising_the_limit_applies_to_the_line_already_buffered():
    """A higher limit lets the partial line grow past the old one."""
    framer = LineFramer(100)
    framer.feed(b"x" * 90)
    framer.max_bytes = 1000
    assert framer.feed(b"x" * 200 + b"\n") == [b"x" * 290]


def test_take_rest_returns_unterminated_tail_once():
    """take_rest() returns the unterminated tail and empties the buffer."""
    framer = LineFramer(100)
    assert framer.feed(b'[1]\n{"tail":true}') == [b"[1]"]
    assert framer.take_rest() == b'{"tail":true}'
    assert framer.pending == 0
    assert framer.take_rest() is None


def test_take_rest_ignores_whitespace_only_tail():
    """take_rest() returns None when the tail is empty or only whitespace."""
    framer = LineFramer(100)
    assert framer.take_rest() is None
    framer.feed(b"[1]\n  \t")
    assert framer.take_rest() is None


# -- parse(): the examples of the JSON-RPC 2.0 specification, section 7 ----------


def _is_error(reply: object, code: int, request_id: object = None) -> bool:
    return (
        isinstance(reply, dict)
        and reply.get("jsonrpc") == "2.0"
        and reply.get("id", "missing") == request_id
        and reply["error"]["code"] == code
        and isinstance(reply["error"]["message"], str)
        and "result" not in reply
    )


def test_spec_positional_params():
    """A request with positional params parses to a Request with args and its id."""
    message = parse(b'{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}')
    assert message == Request("subtract", [42, 23], 1, False)
    assert message.args == [42, 23]
    assert message.kwargs == {}


def test_spec_named_params():
    """A request with named params parses to a Request with kwargs and its id."""
    message = parse(
        b'{"jsonrpc": "2.0", "method": "subtract", '
        b'"params": {"subtrahend": 23, "minuend": 42}, "id": 3}'
    )
    assert isinstance(message, Request)
    assert message.kwargs == {"subtrahend": 23, "minuend": 42}
    assert message.args == []
    assert message.id == 3
    assert not message.is_notification


def test_spec_notification():
    """A request without an id is a notification."""
    message = parse(b'{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}')
    assert message == Request("update", [1, 2, 3, 4, 5], None, True)
    assert parse(b'{"jsonrpc": "2.0", "method": "foobar"}') == Request("foobar", None, None, True)


def test_null_id_is_a_request_not_a_notification():
    """An explicit "id": null makes a request that expects a reply, not a notification."""
    message = parse(b'{"jsonrpc": "2.0", "method": "x", "id": null}')
    assert message == Request("x", None, None, False)


def test_spec_non_existent_method_is_left_to_the_dispatcher():
    """An unknown method name still parses to a valid Request: -32601 is not protocol's job."""
    message = parse(b'{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert message == Request("foobar", None, "1", False)


def test_spec_invalid_json():
    """Invalid JSON gives a -32700 error reply with a null id."""
    reply = parse(b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert _is_error(reply, PARSE_ERROR)


def test_spec_invalid_request_object():
    """A request whose method is not a string gives -32600 with a null id."""
    reply = parse(b'{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
    assert _is_error(reply, INVALID_REQUEST)


def test_spec_batch_invalid_json():
    """A batch that is not valid JSON gives one -32700 error reply, not a batch."""
    reply = parse(
        b'[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},'
        b'{"jsonrpc": "2.0", "method"]'
    )
    assert _is_error(reply, PARSE_ERROR)


def test_spec_empty_array():
    """An empty array gives a single -32600 error reply, not a batch."""
    assert _is_error(parse(b"[]"), INVALID_REQUEST)
    assert _is_error(parse(b" [ ] "), INVALID_REQUEST)


def test_spec_invalid_batch_of_one():
    """The batch [1] gives a batch holding one -32600 error reply."""
    message = parse(b"[1]")
    assert isinstance(message, Batch)
    assert len(message.items) == 1
    assert _is_error(message.items[0], INVALID_REQUEST)


def test_spec_invalid_batch_of_three():
    """The batch [1,2,3] gives a batch of three -32600 error replies."""
    message = parse(b"[1,2,3]")
    assert isinstance(message, Batch)
    assert len(message.items) == 3
    assert all(_is_error(item, INVALID_REQUEST) for item in message.items)


def test_spec_mixed_batch():
    """A mixed batch keeps order: valid members become Requests, invalid ones error replies."""
    message = parse(
        b"["
        b'{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},'
        b'{"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},'
        b'{"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},'
        b'{"foo": "boo"},'
        b'{"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},'
        b'{"jsonrpc": "2.0", "method": "get_data", "id": "9"}'
        b"]"
    )
    assert isinstance(message, Batch)
    items = message.items
    assert items[0] == Request("sum", [1, 2, 4], "1", False)
    assert items[1] == Request("notify_hello", [7], None, True)
    assert items[2] == Request("subtract", [42, 23], "2", False)
    assert _is_error(items[3], INVALID_REQUEST)
    assert items[4] == Request("foo.get", {"name": "myself"}, "5", False)
    assert items[5] == Request("get_data", None, "9", False)
    assert len(items) == 6


def test_spec_batch_of_notifications():
    """A batch of only notifications parses to Requests that are all notifications."""
    message = parse(
        b'[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},'
        b'{"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]'
    )
    assert isinstance(message, Batch)
    assert [item.is_notification for item in message.items] == [True, True]


# -- parse(): other invalid requests ---------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"method": "x", "id": 1}',
        b'{"jsonrpc": "1.0", "method": "x", "id": 1}',
        b'{"jsonrpc": 2.0, "method": "x", "id": 1}',
        b'{"jsonrpc": "2.0 ", "method": "x", "id": 1}',
    ],
    ids=["missing", "1.0", "number", "padded"],
)
def test_jsonrpc_member_must_be_exactly_2_0(raw):
    """A request whose "jsonrpc" member is not exactly the string "2.0" is -32600."""
    reply = parse(raw)
    assert _is_error(reply, INVALID_REQUEST, 1)
    assert "jsonrpc" in reply["error"]["message"]


@pytest.mark.parametrize("method", [b"1", b"null", b"[]", b'{"a":1}', b"true"])
def test_method_must_be_a_string(method):
    """A request whose method is missing or not a string is -32600."""
    reply = parse(b'{"jsonrpc": "2.0", "method": ' + method + b', "id": 4}')
    assert _is_error(reply, INVALID_REQUEST, 4)
    assert "method" in reply["error"]["message"]


def test_missing_method_is_invalid():
    """A request without a method member is -32600 that echoes the readable id."""
    assert _is_error(parse(b'{"jsonrpc": "2.0", "id": 4}'), INVALID_REQUEST, 4)


@pytest.mark.parametrize("params", [b'"bar"', b"1", b"null", b"true"])
def test_params_must_be_array_or_object(params):
    """A request whose params is a string, number, null or boolean is -32600."""
    reply = parse(b'{"jsonrpc": "2.0", "method": "x", "params": ' + params + b', "id": 5}')
    assert _is_error(reply, INVALID_REQUEST, 5)
    assert "params" in reply["error"]["message"]


@pytest.mark.parametrize("request_id", [b"true", b"false", b'{"a": 1}', b"[1]"])
def test_id_of_wrong_type_is_invalid_and_echoed_as_null(request_id):
    """An id that is a boolean, object or array is -32600, and the reply's id is null."""
    reply = parse(b'{"jsonrpc": "2.0", "method": "x", "id": ' + request_id + b"}")
    assert _is_error(reply, INVALID_REQUEST, None)
    assert "id" in reply["error"]["message"]


@pytest.mark.parametrize("request_id", [b'"abc"', b"7", b"-1", b"1.5", b"null"])
def test_id_may_be_string_number_or_null(request_id):
    """An id that is a string, number or null is accepted as is."""
    message = parse(b'{"jsonrpc": "2.0", "method": "x", "id": ' + request_id + b"}")
    assert isinstance(message, Request)
    assert message.id == json.loads(request_id)


@pytest.mark.parametrize("raw", [b'"x"', b"1", b"null", b"true"])
def test_non_object_request_is_invalid(raw):
    """A top-level JSON value that is neither an object nor an array is -32600."""
    assert _is_error(parse(raw), INVALID_REQUEST)


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b'{"jsonrpc": "2.0", "method": "\xc3\x28", "id": 1}', b"\xed\xa0\x80", b"\x80[]"],
    ids=["ff", "bad-continuation", "surrogate", "lone-continuation"],
)
def test_invalid_utf8_is_a_parse_error(raw):
    """Bytes that are not valid UTF-8 give -32700 with a null id."""
    reply = parse(raw)
    assert _is_error(reply, PARSE_ERROR)
    assert "UTF-8" in reply["error"]["message"]


@pytest.mark.parametrize(
    "escaped",
    [rb'["\ud800"]', rb'["a\uDC00b"]', rb'{"\udfff": 1}', rb'["\ude00\ud83d"]'],
    ids=["high-alone", "low-alone", "in-a-key", "pair-reversed"],
)
def test_a_lone_surrogate_escape_is_a_parse_error(escaped):
    """A \\ud800-\\udfff escape without its pair decodes to no character: -32700, before
    any handler sees a string it cannot store or send back."""
    raw = b'{"jsonrpc": "2.0", "method": "x", "params": ' + escaped + b', "id": 1}'
    reply = parse(raw)
    assert _is_error(reply, PARSE_ERROR)
    assert "lone UTF-16 surrogate" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("escaped", "text"),
    [(rb'"\ud83d\ude00"', "\U0001f600"), (rb'"\\ud800"', "\\ud800")],
    ids=["a-pair", "an-escaped-backslash"],
)
def test_a_surrogate_pair_and_a_literal_backslash_u_are_text(escaped, text):
    """A pair is one character; a backslash followed by "ud800" is six characters."""
    request = parse(b'{"jsonrpc": "2.0", "method": "x", "params": [' + escaped + b'], "id": 1}')
    assert request.params == [text]


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_parse_errors(constant):
    """The non-standard constants NaN, Infinity and -Infinity give -32700."""
    raw = b'{"jsonrpc": "2.0", "method": "x", "params": [' + constant + b'], "id": 1}'
    assert _is_error(parse(raw), PARSE_ERROR)
    assert _is_error(parse(constant), PARSE_ERROR)


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deeply_nested_json_is_a_parse_error(opener):
    """100000 levels of nesting give -32700 instead of crashing the parser."""
    reply = parse(opener * 100_000)
    assert _is_error(reply, PARSE_ERROR)


def test_huge_integer_is_a_parse_error():
    """A 5000-digit integer gives -32700 instead of an unbounded conversion."""
    raw = b'{"jsonrpc": "2.0", "method": "x", "params": [' + b"9" * 5000 + b'], "id": 1}'
    assert _is_error(parse(raw), PARSE_ERROR)


@pytest.mark.parametrize("raw", [b"", b"{", b"{}}", b"[1,]", b"{'a': 1}"])
def test_malformed_json_is_a_parse_error(raw):
    """Empty or malformed JSON gives -32700 with a null id."""
    assert _is_error(parse(raw), PARSE_ERROR)


# -- encode() ----------------------------------------------------------------


def test_encode_is_one_terminated_line():
    """encode() returns compact JSON followed by exactly one newline."""
    data = encode(protocol.result_response(1, {"a": [1, 2]}))
    assert data == b'{"jsonrpc":"2.0","id":1,"result":{"a":[1,2]}}\n'


@pytest.mark.parametrize(
    "text", ["a\nb", "a\r\nb", "line\u2028sep\u2029par", "\x00\x1f", "caf\u00e9 \U0001f600"]
)
def test_encode_never_puts_a_raw_newline_inside_the_line(text):
    """Strings with newlines or other control characters stay escaped and round-trip."""
    data = encode({"jsonrpc": "2.0", "id": 1, "result": text})
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    assert b"\r" not in data
    assert json.loads(data)["result"] == text
    framer = LineFramer(1000)
    assert framer.feed(data) == [data[:-1]]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_encode_refuses_nan_and_infinity(value):
    """encode() raises ValueError rather than emit NaN or Infinity."""
    with pytest.raises(ValueError):
        encode({"result": value})


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes"])
def test_encode_refuses_non_json_objects(value):
    """encode() raises TypeError for values JSON cannot carry."""
    with pytest.raises(TypeError):
        encode({"result": value})


def test_error_response_omits_absent_data():
    """error_response() includes "data" only when it is given."""
    assert protocol.error_response(3, -32000, "boom") == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32000, "message": "boom"},
    }
    assert protocol.error_response(3, -32000, "boom", {"k": 1})["error"]["data"] == {"k": 1}


def test_parse_round_trips_an_encoded_request():
    """A request encoded by encode() parses back to the same Request."""
    line = encode({"jsonrpc": "2.0", "method": "m.x", "params": {"s": "a\nb"}, "id": "q"})
    assert parse(line.rstrip(b"\n")) == Request("m.x", {"s": "a\nb"}, "q", False)
