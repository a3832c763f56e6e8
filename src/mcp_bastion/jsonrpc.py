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
from mcp_bastion.jsonscan import Span, head_member, scalar_span, skip_space, tail_member

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


def dumps(message: "Message | RawResponse") -> bytes:
    """Serialise one message; orjson never emits a raw newline, so the result is one NDJSON line.

    A `RawResponse` is its bytes as the child wrote them (joined once); orjson refuses it, so the hot path of every
    other message pays nothing for it.
    """
    try:
        return orjson.dumps(message)
    except orjson.JSONEncodeError:
        if isinstance(message, RawResponse):
            return b"".join(message.chunks)
        raise


def parsed(answer: "Message | RawResponse") -> Message:
    """An answer as a dict: a `RawResponse` is parsed (costly for a large one: only where it must be read)."""
    return answer.parse() if isinstance(answer, RawResponse) else answer


def is_error(answer: "Message | RawResponse") -> bool:
    """Whether an answer is a JSON-RPC error (a `RawResponse` never is: only results pass through raw)."""
    return isinstance(answer, dict) and "error" in answer


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


ID_SCAN_BYTES = 4096  # Issue 11 item 1: how much of each end of a large line is read to find its id and shape


def line_id(head: bytes, tail: bytes) -> JSON:
    """The top-level "id" of a JSON-RPC line known only by its first and last bytes, or None (Issue 11 item 1).

    `head` starts where the line starts and `tail` ends where it ends (each `ID_SCAN_BYTES` or so, never the whole
    line): the Python SDK writes the id first, the TypeScript SDK last. An "id" nested in the result is never taken.
    """
    span = scalar_span(head, head_member(head, b"id"))
    if span is not None:
        return _id_value(head, span)
    return _id_value(tail, tail_member(tail, b"id"))


def _id_value(data: bytes, span: Span | None) -> JSON:
    if span is None:
        return None
    try:
        value = orjson.loads(data[span[0] : span[1]])
    except orjson.JSONDecodeError:
        return None
    return value if is_valid_id(value) else None


class RawResponse:
    """A child's success response kept as the bytes it wrote (Issue 11 item 1): relayed as written with only its id
    rewritten in place, so a large result is neither parsed nor serialised again (peak memory ~1x the line, not 5x).

    `chunks` are the line's pieces as read (no newline), the first holding its first `ID_SCAN_BYTES` and the last its
    last. Built only by `of`, which refuses (None) what it cannot vouch for from the two ends; the caller then parses
    the line like any other. Whoever must read the result (list filtering, a gateway's own request) calls `parse`.
    """

    __slots__ = ("_id_at", "_result_at", "chunks", "id")

    def __init__(self, chunks: list[bytes], request_id: JSON, id_at: tuple[int, int, int], result_at: int) -> None:
        self.chunks = chunks
        self.id = request_id  # the child's id until `set_id` puts the client's in its place
        self._id_at = id_at  # (chunk index, start, end) of the id's bytes
        self._result_at = result_at  # where the result object opens in chunks[0]

    @classmethod
    def of(cls, pieces: list[bytes]) -> "RawResponse | None":
        """The response in `pieces` (one line, no newline), or None unless its ends show a result with one top-level
        id: a notification, a request, an error, a CR (it would end an SSE line) or a duplicate id is parsed instead."""
        chunks = _whole_ends(pieces)
        if any(b"\r" in chunk for chunk in chunks):
            return None
        head, last = chunks[0][:ID_SCAN_BYTES], chunks[-1]
        tail_from = max(len(last) - ID_SCAN_BYTES, 0)
        result_at = head_member(head, b"result")
        if result_at is None or head[result_at] != ord("{"):
            return None
        at_head = scalar_span(head, head_member(head, b"id"))
        at_tail = tail_member(last[tail_from:], b"id")
        if (at_head is None) == (at_tail is None):
            return None  # no id, or one at each end: parsers disagree on which counts
        if at_head is not None:
            index, (start, end) = 0, at_head
        else:
            assert at_tail is not None
            index, start, end = len(chunks) - 1, tail_from + at_tail[0], tail_from + at_tail[1]
        request_id = _id_value(chunks[index], (start, end))
        return None if request_id is None else cls(chunks, request_id, (index, start, end), result_at)

    def set_id(self, value: JSON) -> None:
        """Write `value` where the child wrote its id (one small chunk is copied, never the result)."""
        index, start, end = self._id_at
        written = orjson.dumps(value)
        self._splice(index, start, end, written)
        self._id_at = (index, start, start + len(written))
        self.id = value

    def add_members(self, members: Message) -> bool:
        """Add `members` to the result object; False (nothing changed) if it may hold one of them already."""
        if any(self.contains(orjson.dumps(key)) for key in members):
            return False
        head, at = self.chunks[0], self._result_at + 1
        written = orjson.dumps(members)[1:-1]
        if head[skip_space(head, at) : skip_space(head, at) + 1] != b"}":
            written += b","
        self._splice(0, at, at, written)
        return True

    @property
    def tool_error(self) -> bool:
        """Whether the result says `"isError": true`, read from its ends; parsed only if "isError" is elsewhere."""
        head = self.chunks[0][:ID_SCAN_BYTES]
        span = scalar_span(head, head_member(head, b"isError", self._result_at))
        found = head if span is not None else self.chunks[-1][-ID_SCAN_BYTES:]
        span = span if span is not None else tail_member(found, b"isError", depth=2)
        if span is not None:
            return found[span[0] : span[1]] == b"true"
        if not self.contains(b'"isError"'):
            return False
        result = self.parse().get("result")
        return isinstance(result, dict) and result.get("isError") is True

    def contains(self, needle: bytes) -> bool:
        """Whether `needle` occurs in the line (across chunk boundaries too)."""
        keep, previous = len(needle) - 1, b""
        for chunk in self.chunks:
            if needle in chunk or needle in previous + chunk[:keep]:
                return True
            previous = chunk[-keep:]
        return False

    def parse(self) -> Message:
        """The response as a dict (the whole line is joined and parsed: use only where it must be read).

        Raises:
            ParseError: it is not JSON after all (the middle of the line was never read before).
        """
        message = loads(b"".join(self.chunks))
        if not isinstance(message, dict):
            raise ParseError("Parse error: not a JSON object")
        return message

    def _splice(self, index: int, start: int, end: int, written: bytes) -> None:
        """Replace chunks[index][start:end] by `written`; the positions kept after it move with it."""
        chunk = self.chunks[index]
        self.chunks[index] = chunk[:start] + written + chunk[end:]
        grown = len(written) - (end - start)
        at_index, id_start, id_end = self._id_at
        if at_index == index and id_start >= end:
            self._id_at = (index, id_start + grown, id_end + grown)
        if index == 0 and self._result_at >= end:
            self._result_at += grown


Answer = Message | RawResponse  # what reaches a request's sink: parsed, or a large result as the child wrote it


def _whole_ends(pieces: list[bytes]) -> list[bytes]:
    """`pieces` with the first and the last at least ID_SCAN_BYTES long (short ones at an end are joined, a few KiB)."""
    first, size = 0, 0
    while first < len(pieces) and size < ID_SCAN_BYTES:
        size += len(pieces[first])
        first += 1
    chunks = [b"".join(pieces[:first]) if first > 1 else pieces[0], *pieces[first:]]
    last, size = len(chunks), 0
    while last > 0 and size < ID_SCAN_BYTES:
        last -= 1
        size += len(chunks[last])
    if last < len(chunks) - 1:
        chunks[last:] = [b"".join(chunks[last:])]
    return chunks


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
    "Answer",
    "Kind",
    "Message",
    "RawResponse",
    "classify",
    "dumps",
    "error",
    "error_bytes",
    "is_error",
    "line_id",
    "loads",
    "notification",
    "parsed",
    "progress_token",
    "result",
]
