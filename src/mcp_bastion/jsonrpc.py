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
    "loads",
    "notification",
    "progress_token",
    "result",
]
