"""A large result relayed as the child's bytes (Issue 11 item 1): jsonrpc.RawResponse and the jsonscan scanners.

Sans-I/O: bytes in, bytes out. Whatever the SDK's member order, the chunking of the pipe or the id's type, what a
client parses is exactly the child's answer under the client's id; anything the two ends cannot vouch for is refused
(None) so the caller parses it like any other line.
"""

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_bastion.errors import ParseError
from mcp_bastion.jsonrpc import ID_SCAN_BYTES, RawResponse, dumps, is_error, parsed
from mcp_bastion.jsonscan import head_member, scalar_span, tail_member

FILLER = "x" * (3 * ID_SCAN_BYTES)  # the middle of the line, which neither end reaches
PIECE = 1000  # how the tests cut a line into pieces, as reads from a pipe do


def result_of(text: str = FILLER, **extra: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "structuredContent": {"text": text}, **extra}


def line(request_id: Any, *, id_last: bool, result: Any = None, spaced: bool = False) -> bytes:
    """A response as the TypeScript SDK (id last) or the Python SDK (id first) writes it."""
    found = result if result is not None else result_of()
    message = {"result": found, "jsonrpc": "2.0", "id": request_id}
    if not id_last:
        message = {"jsonrpc": "2.0", "id": request_id, "result": found}
    return json.dumps(message, separators=(", ", ": ") if spaced else (",", ":"), ensure_ascii=False).encode()


def cut(data: bytes, size: int = PIECE) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def raw_of(data: bytes, size: int = PIECE) -> RawResponse:
    raw = RawResponse.of(cut(data, size))
    assert raw is not None
    return raw


def relayed(raw: RawResponse) -> Any:
    return orjson.loads(dumps(raw))


@pytest.mark.parametrize("id_last", [True, False])
@pytest.mark.parametrize("spaced", [True, False])
def test_the_childs_bytes_come_back_under_the_callers_id_whichever_end_holds_it(id_last: bool, spaced: bool) -> None:
    raw = raw_of(line(17, id_last=id_last, spaced=spaced))
    assert raw.id == 17
    raw.set_id('the-client\'s "own" id')
    assert relayed(raw) == {"jsonrpc": "2.0", "id": 'the-client\'s "own" id', "result": result_of()}
    assert raw.id == 'the-client\'s "own" id'
    assert not is_error(raw)
    assert parsed(raw) == relayed(raw)


def test_only_the_chunk_holding_the_id_is_copied_the_result_pieces_are_the_ones_read() -> None:
    pieces = cut(line(3, id_last=True), 2 * ID_SCAN_BYTES)
    raw = RawResponse.of(pieces)
    assert raw is not None
    raw.set_id(123456789)
    assert all(a is b for a, b in zip(raw.chunks[:-1], pieces[:-1], strict=False))
    assert relayed(raw)["id"] == 123456789


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"' + FILLER.encode() + b'"}}', id="error"),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"' + FILLER.encode() + b'"}}',
            id="notification",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"x":"' + FILLER.encode() + b'"}}',
            id="request",
        ),
        pytest.param(line(4, id_last=False)[:-1] + b',"id":5}', id="an id at each end"),
        pytest.param(line(4, id_last=True).replace(b',"id":4', b""), id="no id"),
        pytest.param(line(True, id_last=True), id="a bool id"),
        pytest.param(line(4, id_last=True, result=[FILLER]), id="a result that is not an object"),
        pytest.param(line(4, id_last=True).replace(b'"jsonrpc"', b'\r"jsonrpc"'), id="a CR, which ends an SSE line"),
    ],
)
def test_what_the_ends_cannot_vouch_for_is_left_to_the_parser(data: bytes) -> None:
    assert RawResponse.of(cut(data)) is None


def test_an_id_that_looks_like_one_inside_the_result_is_never_taken() -> None:
    fake = '"id":99}'
    raw = raw_of(line(6, id_last=True, result=result_of(FILLER + fake, id=98)))
    assert raw.id == 6
    raw = raw_of(line(6, id_last=False, result={"id": 97, **result_of()}))
    assert raw.id == 6


def test_short_pieces_at_either_end_are_joined_so_the_id_is_never_split() -> None:
    data = line(2**40, id_last=True)
    pieces = [data[:3], data[3:9], *cut(data[9:-20], 50_000), *cut(data[-20:], 3)]
    raw = RawResponse.of(pieces)
    assert raw is not None
    raw.set_id(1)
    assert relayed(raw)["id"] == 1
    assert len(raw.chunks[0]) >= ID_SCAN_BYTES
    assert len(raw.chunks[-1]) >= ID_SCAN_BYTES


@settings(max_examples=60, deadline=None)
@given(
    request_id=st.integers(min_value=1, max_value=2**53),
    client_id=st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=40)),
    ends=st.tuples(st.text(max_size=300), st.text(max_size=300)),
    middle=st.integers(min_value=2 * ID_SCAN_BYTES, max_value=3 * ID_SCAN_BYTES),
    id_last=st.booleans(),
    spaced=st.booleans(),
    size=st.integers(min_value=1, max_value=5000),
)
def test_any_result_relayed_raw_parses_as_the_childs_answer_under_the_clients_id(
    request_id: int, client_id: Any, ends: tuple[str, str], middle: int, id_last: bool, spaced: bool, size: int
) -> None:
    text = ends[0] + "x" * middle + ends[1]  # quotes, backslashes and any character near the windows' edges
    data = line(request_id, id_last=id_last, result=result_of(text), spaced=spaced)
    raw = RawResponse.of(cut(data, size))
    assert raw is not None  # JSON escapes a CR in a string: no well-formed answer is refused
    assert raw.id == request_id
    raw.set_id(client_id)
    assert relayed(raw) == {**json.loads(data), "id": client_id}


@pytest.mark.parametrize("id_last", [True, False])
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"isError": True}, True, id="isError true at the end"),
        pytest.param({"isError": False}, False, id="isError false at the end"),
        pytest.param({}, False, id="no isError"),
    ],
)
def test_a_tool_error_is_read_from_the_ends(id_last: bool, extra: dict[str, Any], expected: bool) -> None:
    assert raw_of(line(8, id_last=id_last, result=result_of(**extra))).tool_error is expected


def test_a_tool_error_at_the_start_of_the_result_or_in_its_middle_is_found_too() -> None:
    first = {"isError": True, **result_of()}
    assert raw_of(line(8, id_last=True, result=first)).tool_error is True
    middle = {"content": [{"type": "text", "text": FILLER}], "isError": True, "structuredContent": {"t": FILLER}}
    assert raw_of(line(8, id_last=True, result=middle)).tool_error is True  # parsed: it is nowhere near an end
    nested = {"content": [{"type": "text", "text": FILLER}], "structuredContent": {"isError": True, "t": FILLER}}
    assert raw_of(line(8, id_last=True, result=nested)).tool_error is False
    assert raw_of(line(8, id_last=False, result=result_of(FILLER + '"isError":true'))).tool_error is False


@pytest.mark.parametrize("id_last", [True, False])
def test_members_are_added_to_the_result_unless_it_may_hold_them(id_last: bool) -> None:
    raw = raw_of(line(9, id_last=id_last))
    assert raw.add_members({"resultType": "complete", "_meta": {"k": 1}})
    raw.set_id("c")
    assert relayed(raw) == {
        "jsonrpc": "2.0",
        "id": "c",
        "result": {"resultType": "complete", "_meta": {"k": 1}, **result_of()},
    }
    held = raw_of(line(9, id_last=id_last, result=result_of(_meta={"mine": True})))
    assert not held.add_members({"resultType": "complete", "_meta": {"k": 1}})
    assert relayed(held)["result"]["_meta"] == {"mine": True}


def test_members_added_to_an_empty_result_make_valid_json() -> None:
    data = b'{"jsonrpc":"2.0","id":1,"result":{ }' + b" " * ID_SCAN_BYTES + b"}"
    raw = raw_of(data)
    assert raw.add_members({"resultType": "complete"})
    assert relayed(raw) == {"jsonrpc": "2.0", "id": 1, "result": {"resultType": "complete"}}


def test_a_needle_split_across_two_pieces_is_found() -> None:
    data = line(1, id_last=True, result=result_of(_meta={}))
    at = data.index(b'"_meta"') + 3
    raw = RawResponse.of([data[:at], data[at:]])
    assert raw is not None
    assert raw.contains(b'"_meta"')
    assert not raw.contains(b'"resultType"')


def test_a_middle_that_is_not_json_is_a_parse_error_when_it_must_be_read() -> None:
    raw = raw_of(line(1, id_last=True).replace(b"xxxx", b"x\x00x}", 1))
    with pytest.raises(ParseError):
        raw.parse()


def test_the_scanners_find_members_only_at_their_own_level() -> None:
    data = b'{"a": {"id": 1}, "id" : "x", "result": {"isError": true}}'
    assert scalar_span(data, head_member(data, b"id")) == (24, 27)
    assert head_member(data, b"missing") is None
    result_at = head_member(data, b"result")
    assert result_at is not None
    assert scalar_span(data, head_member(data, b"isError", result_at)) == (51, 55)
    assert tail_member(data, b"isError", depth=2) == (51, 55)
    assert tail_member(data, b"id", depth=2) is None  # the first object closed before the end is the result
    assert tail_member(data, b"id") == (24, 27)
    assert head_member(b"[1]", b"id") is None
