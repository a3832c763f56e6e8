"""The sans-I/O JSON-RPC core (jsonrpc.py): parse once, classify the envelope, build answers. No sockets.

Issue 10 (code health): the edge cases every transport relies on, in milliseconds, plus properties where natural.
"""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_bastion.errors import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, ParseError, ProtocolError
from mcp_bastion.jsonrpc import (
    Kind,
    classify,
    dumps,
    error,
    error_bytes,
    is_valid_id,
    loads,
    notification,
    progress_token,
    result,
)

ORJSON_MAX_DEPTH = 1024  # orjson refuses deeper nesting: a ParseError, never a RecursionError

ids = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=30))
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


def protocol_error(obj: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        classify(obj)
    return caught.value


def test_invalid_utf8_and_bad_syntax_are_parse_errors_that_never_echo_the_input() -> None:
    for body in (b'{"a": "\xff\xfe"}', b'{"jsonrpc": "2.0", "method": SECRET-VALUE}', b"", b"{"):
        with pytest.raises(ParseError) as caught:
            loads(body)
        assert caught.value.jsonrpc_code == PARSE_ERROR
        assert caught.value.http_status == 400
        assert "SECRET" not in caught.value.message
        assert len(caught.value.message) <= len("Parse error: ") + 120


def test_nesting_deeper_than_the_parser_allows_is_a_parse_error_not_a_crash() -> None:
    deep = b"[" * (ORJSON_MAX_DEPTH + 10) + b"]" * (ORJSON_MAX_DEPTH + 10)
    with pytest.raises(ParseError):
        loads(deep)


def test_a_request_a_notification_and_a_response_are_told_apart() -> None:
    assert classify({"jsonrpc": "2.0", "id": 1, "method": "ping"}) is Kind.REQUEST
    assert classify({"jsonrpc": "2.0", "id": "a", "method": "tools/list", "params": {}}) is Kind.REQUEST
    assert classify({"jsonrpc": "2.0", "method": "notifications/initialized"}) is Kind.NOTIFICATION
    assert classify({"jsonrpc": "2.0", "id": 1, "result": {}}) is Kind.RESPONSE
    assert classify({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}}) is Kind.RESPONSE


def test_an_error_response_to_an_unreadable_request_may_carry_a_null_id_but_a_request_may_not() -> None:
    assert classify({"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": "x"}}) is Kind.RESPONSE
    assert "id" in protocol_error({"jsonrpc": "2.0", "id": None, "method": "ping"}).message


def test_batches_and_non_objects_are_refused_with_invalid_request() -> None:
    for obj in ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], [], "ping", 1, None, True):
        err = protocol_error(obj)
        assert err.jsonrpc_code == INVALID_REQUEST
        assert err.http_status == 400
    assert protocol_error([]).message == "Batch requests are not supported"


@pytest.mark.parametrize("version", [None, "2", "1.0", 2.0, " 2.0", "2.0 "])
def test_a_jsonrpc_member_other_than_exactly_the_string_2_0_is_refused(version: Any) -> None:
    message: dict[str, Any] = {"id": 1, "method": "ping"}
    if version is not None:
        message["jsonrpc"] = version
    assert protocol_error(message).message == 'The "jsonrpc" member must be exactly "2.0"'


@pytest.mark.parametrize("method", ["", 1, ["ping"], {"name": "ping"}, False])
def test_a_method_that_is_not_a_non_empty_string_is_refused(method: Any) -> None:
    assert "method" in protocol_error({"jsonrpc": "2.0", "id": 1, "method": method}).message


@pytest.mark.parametrize("params", [[], [1, 2], "x", 3, True])
def test_params_that_are_not_an_object_are_invalid_params(params: Any) -> None:
    err = protocol_error({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    assert err.jsonrpc_code == INVALID_PARAMS


def test_explicit_null_params_are_the_same_as_no_params() -> None:
    assert classify({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": None}) is Kind.REQUEST


@pytest.mark.parametrize("bad_id", [True, False, 1.5, 1.0, [1], {"a": 1}])
def test_an_id_that_is_a_bool_a_float_or_a_container_is_refused_on_requests_and_responses(bad_id: Any) -> None:
    assert protocol_error({"jsonrpc": "2.0", "id": bad_id, "method": "ping"}).jsonrpc_code == INVALID_REQUEST
    assert protocol_error({"jsonrpc": "2.0", "id": bad_id, "result": {}}).jsonrpc_code == INVALID_REQUEST


def test_a_response_needs_exactly_one_of_result_and_error_and_a_message_without_method_needs_an_id() -> None:
    assert "exactly one" in protocol_error({"jsonrpc": "2.0", "id": 1}).message
    assert "exactly one" in protocol_error({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}).message
    assert protocol_error({"jsonrpc": "2.0", "result": {}}).message == 'A request needs a "method" member'


@given(value=json_values)
def test_only_strings_and_integers_that_are_not_bools_are_valid_ids(value: Any) -> None:
    expected = isinstance(value, str) or (type(value) is int)
    assert is_valid_id(value) is expected


@given(
    request_id=ids, method=st.text(min_size=1, max_size=40), params=st.dictionaries(st.text(max_size=8), json_values)
)
def test_any_well_formed_request_is_a_request_and_survives_a_dump_and_parse_unchanged(
    request_id: Any, method: str, params: dict[str, Any]
) -> None:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    line = dumps(message)
    assert b"\n" not in line  # one NDJSON line, whatever the strings hold
    assert loads(line) == message
    assert classify(loads(line)) is Kind.REQUEST


@given(text=st.text())
def test_dumps_never_emits_a_raw_newline_so_a_message_is_always_one_ndjson_line(text: str) -> None:
    line = dumps(notification("notifications/message", {"data": text + "\n\r\u2028"}))
    assert b"\n" not in line
    assert b"\r" not in line
    assert json.loads(line)["params"]["data"] == text + "\n\r\u2028"


def test_error_objects_carry_data_only_when_given_and_the_bytes_form_is_the_same_object() -> None:
    assert error(3, -32000, "down") == {"jsonrpc": "2.0", "id": 3, "error": {"code": -32000, "message": "down"}}
    with_data = error("x", -32000, "down", {"retryAfterSeconds": 2})
    assert with_data["error"]["data"] == {"retryAfterSeconds": 2}
    assert json.loads(error_bytes("x", -32000, "down", {"retryAfterSeconds": 2})) == with_data
    assert error(None, PARSE_ERROR, "Parse error")["id"] is None
    for answer in (with_data, result(1, {"tools": []})):
        assert classify(answer) is Kind.RESPONSE


def test_a_notification_without_params_has_no_params_member() -> None:
    assert notification("notifications/initialized") == {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert classify(notification("notifications/initialized")) is Kind.NOTIFICATION


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"params": {"_meta": {"progressToken": "p-1"}}}, "p-1"),
        ({"params": {"_meta": {"progressToken": 7}}}, 7),
        ({"params": {"_meta": {}}}, None),
        ({"params": {"_meta": "not an object"}}, None),
        ({"params": ["_meta"]}, None),
        ({"params": None}, None),
        ({}, None),
    ],
)
def test_the_progress_token_is_read_only_from_params_meta(message: dict[str, Any], expected: Any) -> None:
    assert progress_token({"jsonrpc": "2.0", "id": 1, "method": "tools/call", **message}) == expected
