"""Finding the top-level id of a line too large to keep, from its first and last bytes (Issue 11 item 1).

Sans-I/O: jsonrpc.line_id on bytes, no sockets. The SDKs put the id first (Python) or last (TypeScript).
"""

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mcp_bastion.jsonrpc import ID_SCAN_BYTES, line_id

FILLER = "x" * (3 * ID_SCAN_BYTES)  # the middle of the line, which neither end reaches


def ends(message: dict[str, Any], *, spaced: bool = False) -> tuple[bytes, bytes]:
    line = json.dumps(message, separators=(", ", ": ") if spaced else (",", ":")).encode()
    return line[:ID_SCAN_BYTES], line[-ID_SCAN_BYTES:]


def answer(request_id: Any, *, id_last: bool, result: Any = None) -> dict[str, Any]:
    found = result if result is not None else {"content": [{"type": "text", "text": FILLER}]}
    if id_last:
        return {"result": found, "jsonrpc": "2.0", "id": request_id}
    return {"jsonrpc": "2.0", "id": request_id, "result": found}


def test_the_typescript_sdks_id_at_the_end_of_the_line_is_found() -> None:
    assert line_id(*ends(answer(41, id_last=True))) == 41
    assert line_id(*ends(answer("call-7", id_last=True), spaced=True)) == "call-7"


def test_the_python_sdks_id_at_the_start_of_the_line_is_found() -> None:
    assert line_id(*ends(answer(41, id_last=False))) == 41


def test_an_id_nested_inside_the_result_is_never_taken_for_the_answers_id() -> None:
    nested = {"items": [{"id": 99, "text": FILLER}], "id": 98}
    head, tail = ends({"jsonrpc": "2.0", "result": nested, "error": None})
    assert line_id(head, tail) is None
    assert line_id(*ends(answer(5, id_last=True, result={"id": 99, "text": FILLER, "last": {"id": 3}}))) == 5


def test_quoted_text_that_looks_like_an_id_inside_a_string_is_not_an_id() -> None:
    fake_member = 'x", "id": 666, "y": "\\\\' * 500
    assert line_id(*ends(answer(8, id_last=True, result={"text": FILLER + fake_member}))) == 8
    assert line_id(*ends({"result": {"text": FILLER + fake_member}, "jsonrpc": "2.0"})) is None


def test_a_line_whose_id_is_in_the_middle_or_absent_or_invalid_gives_none() -> None:
    assert line_id(*ends({"jsonrpc": "2.0", "a": FILLER, "id": 4, "b": FILLER})) is None
    assert line_id(*ends({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": FILLER}})) is None
    assert line_id(*ends(answer(True, id_last=True))) is None
    assert line_id(*ends(answer(1.5, id_last=False))) is None
    assert line_id(b"", b"") is None
    assert line_id(b"not json at all", b"...and no end") is None


ids = st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=40))
texts = st.text(max_size=200)


@given(request_id=ids, id_last=st.booleans(), decoys=st.lists(st.tuples(texts, ids), max_size=5), spaced=st.booleans())
def test_the_top_level_id_is_found_whatever_the_content_around_it(
    request_id: Any, id_last: bool, decoys: list[tuple[str, Any]], spaced: bool
) -> None:
    """Decoys: strings with quotes, backslashes and "id" keys, nested objects with ids, before and after the filler."""
    nested = [{"id": decoy_id, "text": text, '"id"': text} for text, decoy_id in decoys]
    result = {"before": nested, "text": FILLER, "after": nested}
    assert line_id(*ends(answer(request_id, id_last=id_last, result=result), spaced=spaced)) == request_id
