"""Sans-I/O JSON-RPC 2.0: parse once, classify, build errors. No sockets, no pipes.

Messages stay plain dicts parsed by orjson: the relay rewrites only `id`,
`progressToken` and cancellation ids, so a full model parse would be waste.
"""

import enum
from typing import Any

import orjson

from mcp_bastion.errors import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    ParseError,
    ProtocolError,
)

JSON = Any
Message = dict[str, Any]


class Kind(enum.Enum):
    """What a JSON-RPC message is."""

    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"


def loads(body: bytes) -> JSON:
    """Parse bytes as JSON; invalid UTF-8, bad syntax and over-deep nesting are a ParseError."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"Parse error: {_short_reason(exc)}") from exc


def _short_reason(exc: orjson.JSONDecodeError) -> str:
    # orjson's message names the position; never echo the input back.
    return str(exc.msg)[:120]


def classify(obj: JSON) -> Kind:
    """Check the JSON-RPC 2.0 envelope of one message and say what it is.

    Raises:
        ProtocolError: a batch, a non-object, a wrong `jsonrpc`, a missing method, a bad id or params.
    """
    if isinstance(obj, list):
        raise ProtocolError("Batch requests are not supported")
    if not isinstance(obj, dict):
        raise ProtocolError("A JSON-RPC message must be a JSON object")
    if obj.get("jsonrpc") != "2.0":
        raise ProtocolError('The "jsonrpc" member must be exactly "2.0"')
    method = obj.get("method")
    if method is None:
        return _classify_response(obj)
    if not isinstance(method, str) or not method:
        raise ProtocolError('The "method" member must be a non-empty string')
    params = obj.get("params")
    if params is not None and not isinstance(params, dict):
        raise ProtocolError('The "params" member must be an object', code=INVALID_PARAMS)
    if "id" not in obj:
        return Kind.NOTIFICATION
    if not is_valid_id(obj["id"]):
        raise ProtocolError('The "id" member must be a string or an integer')
    return Kind.REQUEST


def _classify_response(obj: Message) -> Kind:
    if "id" not in obj:
        raise ProtocolError('A request needs a "method" member')
    if ("result" in obj) == ("error" in obj):
        raise ProtocolError('A response needs exactly one of "result" and "error"')
    if not is_valid_id(obj["id"]) and obj["id"] is not None:
        raise ProtocolError('The "id" member must be a string or an integer')
    return Kind.RESPONSE


def is_valid_id(value: JSON) -> bool:
    """A request id is a string or an integer (never a bool, float or null)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def dumps(message: Message) -> bytes:
    """Serialise one message; orjson never emits a raw newline, so the result is one NDJSON line."""
    return orjson.dumps(message)


def error(request_id: JSON, code: int, message: str, data: JSON = None) -> Message:
    """A JSON-RPC error response object."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": err}


def error_bytes(request_id: JSON, code: int, message: str, data: JSON = None) -> bytes:
    """A JSON-RPC error response, serialised."""
    return orjson.dumps(error(request_id, code, message, data))


def result(request_id: JSON, value: JSON) -> Message:
    """A JSON-RPC success response object."""
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def notification(method: str, params: JSON = None) -> Message:
    """A JSON-RPC notification object."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


ID_SCAN_BYTES = 4096  # Issue 11 item 1: how much of each end of an oversized line is kept to find its id
_QUOTE, _BACKSLASH, _COLON, _COMMA = 0x22, 0x5C, 0x3A, 0x2C
_OPEN, _CLOSE, _WHITESPACE = frozenset(b"{["), frozenset(b"}]"), frozenset(b" \t\r\n")

Span = tuple[int, int]


def line_id(head: bytes, tail: bytes) -> JSON:
    """The top-level "id" of a JSON-RPC line known only by its first and last bytes, or None (Issue 11 item 1).

    `head` starts where the line starts and `tail` ends where it ends (each `ID_SCAN_BYTES` or so, never the whole
    line): the Python SDK writes the id first, the TypeScript SDK last. An "id" nested in the result is never taken.
    """
    span = head_id_span(head)
    found = head if span is not None else tail
    span = span if span is not None else tail_id_span(tail)
    return _id_value(found, span)


def _id_value(data: bytes, span: Span | None) -> JSON:
    if span is None:
        return None
    try:
        value = orjson.loads(data[span[0] : span[1]])
    except orjson.JSONDecodeError:
        return None
    return value if is_valid_id(value) else None


def head_id_span(data: bytes) -> Span | None:
    """Where the value of the top-level "id" member lies in `data`, the start of one JSON object; None if unseen."""
    depth, i, n, expect_key = 0, 0, len(data), False
    while i < n:
        c = data[i]
        if c == _QUOTE:
            end = _string_end(data, i)
            if end < 0:
                return None
            if depth == 1 and expect_key:
                colon = _skip_space(data, end + 1)
                if colon >= n or data[colon] != _COLON:
                    return None
                if data[i + 1 : end] == b"id":
                    return _value_span(data, _skip_space(data, colon + 1))
                i, expect_key = colon + 1, False
                continue
            i = end + 1
            continue
        if c in _OPEN:
            depth += 1
            expect_key = depth == 1
        elif c in _CLOSE:
            depth -= 1
            if depth <= 0:
                return None
        elif c == _COMMA and depth == 1:
            expect_key = True
        i += 1
    return None


def tail_id_span(data: bytes) -> Span | None:
    """Where the value of the top-level "id" member lies in `data`, the end of one JSON object; None if unseen.

    Read backwards from the end, so a window that starts mid-string is never misread: a string whose opening quote
    lies before the window ends the search.
    """
    depth, i, value_end, colon, after = 0, len(data) - 1, -1, -1, 0
    while i >= 0:
        c = data[i]
        if c == _QUOTE:
            start = _string_start(data, i)
            if start < 0:
                return None
            if depth == 1 and after == _COLON and data[start + 1 : i] == b"id":
                return _trim(data, colon + 1, value_end)
            i, after = start - 1, _QUOTE
            continue
        if c in _CLOSE:
            depth += 1
            if depth == 1:
                value_end = i
        elif c in _OPEN:
            depth -= 1
            if depth <= 0:
                return None
        elif depth == 1 and c == _COMMA:
            value_end = i
        elif depth == 1 and c == _COLON:
            colon = i
        if c not in _WHITESPACE:
            after = c
        i -= 1
    return None


def _string_end(data: bytes, start: int) -> int:
    """The index of the quote closing the string opened at `start`, or -1 if it is not in `data`."""
    j = start + 1
    while (j := data.find(b'"', j)) >= 0:
        if _escapes_before(data, j) % 2 == 0:
            return j
        j += 1
    return -1


def _string_start(data: bytes, end: int) -> int:
    """The index of the quote opening the string closed at `end`, or -1 if it is not in `data`."""
    j = end
    while (j := data.rfind(b'"', 0, j)) >= 0:
        run = _escapes_before(data, j)
        if run == j:
            return -1  # the backslashes reach the window's start: their parity is unknown
        if run % 2 == 0:
            return j
    return -1


def _escapes_before(data: bytes, index: int) -> int:
    k = index - 1
    while k >= 0 and data[k] == _BACKSLASH:
        k -= 1
    return index - 1 - k


def _skip_space(data: bytes, i: int) -> int:
    while i < len(data) and data[i] in _WHITESPACE:
        i += 1
    return i


def _value_span(data: bytes, start: int) -> Span | None:
    """The span of the scalar value (string or number) starting at `start`, if it ends within `data`."""
    if start >= len(data):
        return None
    if data[start] == _QUOTE:
        end = _string_end(data, start)
        return (start, end + 1) if end >= 0 else None
    end = start
    while end < len(data) and data[end] not in b",}] \t\r\n":
        end += 1
    return (start, end) if end < len(data) else None


def _trim(data: bytes, start: int, end: int) -> Span | None:
    while start < end and data[start] in _WHITESPACE:
        start += 1
    while end > start and data[end - 1] in _WHITESPACE:
        end -= 1
    return (start, end) if start < end else None


def progress_token(message: Message) -> JSON:
    """The `params._meta.progressToken` of a request, or None."""
    params = message.get("params")
    if not isinstance(params, dict):
        return None
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return None
    return meta.get("progressToken")


__all__ = [
    "INVALID_REQUEST",
    "JSON",
    "Kind",
    "Message",
    "classify",
    "dumps",
    "error",
    "error_bytes",
    "line_id",
    "loads",
    "notification",
    "progress_token",
    "result",
]
