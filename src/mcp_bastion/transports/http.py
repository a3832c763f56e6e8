"""Raw ASGI helpers: read a bounded body, send JSON or an SSE stream, watch for disconnects.

Hand-written because this is the hot path: a framework Request/Response per call costs more than the relay.
"""

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import orjson

from mcp_bastion.access import CONTEXT_KEY, Principal, RequestContext
from mcp_bastion.errors import GatewayError, ProtocolError
from mcp_bastion.jsonrpc import ID_SCAN_BYTES, Answer, RawResponse, error_bytes
from mcp_bastion.types import Receive as Receive
from mcp_bastion.types import Scope as Scope
from mcp_bastion.types import Send as Send

Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),  # nginx would otherwise buffer the stream and break live delivery
    (b"connection", b"keep-alive"),
]


class BodyTooLarge(ProtocolError):
    """The request body is over the configured cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body exceeds {limit} bytes", status=413)


class Request:
    """The parts of an ASGI HTTP scope a transport needs, parsed once."""

    __slots__ = ("headers", "method", "query", "raw_headers", "receive", "scope", "send")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope["method"]
        self.raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        known = scope.get("state", {}).get("headers")  # the pipeline parsed them already
        self.headers: dict[bytes, bytes] = known if known is not None else dict(self.raw_headers)
        self.query: bytes = scope.get("query_string", b"")

    def header(self, name: bytes) -> str | None:
        """A header's value (names are lowercase in ASGI), decoded as latin-1 as HTTP says."""
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    def query_param(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = parse_qs(self.query.decode("latin-1")).get(name)
        return values[0] if values else None

    @property
    def ctx(self) -> RequestContext | None:
        """The typed context the security pipeline placed in the scope (None outside the pipeline)."""
        ctx: RequestContext | None = self.scope.get(CONTEXT_KEY)
        return ctx

    @property
    def caller(self) -> Principal | None:
        """Who the security pipeline says is calling."""
        ctx = self.ctx
        return ctx.principal if ctx is not None else None

    @property
    def principal(self) -> str | None:
        """The stable id of the caller (`env:admin`, `token:NAME`...): what sessions and quotas key on."""
        caller = self.caller
        return caller.id if caller is not None else None

    @property
    def credential(self) -> str | None:
        """The hash of the token behind this request: what a revocation ends."""
        caller = self.caller
        return caller.credential if caller is not None else None

    def accepts(self) -> tuple[bool, bool]:
        """Whether Accept lists application/json and text/event-stream (wildcards count)."""
        accept = self.headers.get(b"accept", b"").lower()
        wildcard = b"*/*" in accept
        return (
            wildcard or b"application/json" in accept or b"application/*" in accept,
            wildcard or b"text/event-stream" in accept or b"text/*" in accept,
        )

    def is_json(self) -> bool:
        """Content-Type is application/json (parameters such as charset allowed)."""
        content_type = self.headers.get(b"content-type", b"")
        return content_type.split(b";", 1)[0].strip().lower() == b"application/json"

    async def body(self, limit: int) -> bytes:
        """The whole body, refusing more than `limit` bytes (Content-Length checked first, then the stream).

        Raises:
            BodyTooLarge
        """
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ProtocolError("client disconnected", status=499)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks) if len(chunks) != 1 else chunks[0]


OVERSIZE_DRAIN_MAX_BYTES = 64 * 1024 * 1024  # read (never kept) past the cap to find an id written last; then stop


async def read_ends(req: "Request", limit: int) -> tuple[bytes | None, bytes, bytes]:
    """The body if it fits `limit`; else (None, its first and last ID_SCAN_BYTES), for the request's id.

    An oversized body is drained without being kept, up to OVERSIZE_DRAIN_MAX_BYTES (past that, only its head
    counts), so a client that waits for the answer on another stream can be told (HTTP+SSE).
    """
    chunks: list[bytes] = []
    size = 0
    head = tail = b""
    while True:
        message = await req.receive()
        if message["type"] == "http.disconnect":
            raise ProtocolError("client disconnected", status=499)
        chunk = message.get("body", b"")
        size += len(chunk)
        more = bool(message.get("more_body", False))
        if size <= limit:
            chunks.append(chunk)
            if not more:
                return b"".join(chunks), b"", b""
            continue
        if chunks:
            joined = b"".join(chunks)
            head, tail, chunks = joined[:ID_SCAN_BYTES], joined[-ID_SCAN_BYTES:], []
        head = head or chunk[:ID_SCAN_BYTES]
        tail = (tail + chunk)[-ID_SCAN_BYTES:]
        if not more:
            return None, head, tail
        if size > OVERSIZE_DRAIN_MAX_BYTES:
            return None, head, b""


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = JSON_HEADERS
) -> None:
    """A complete response."""
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def send_answer(send: Send, status: int, answer: Answer, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """A JSON-RPC answer as a complete response. A large result relayed as its bytes (Issue 11 item 1) goes out in
    the pieces it was read in, never joined: a 20 MB answer would be copied twice more, here and by the server's
    chunked framing, which copies each body it frames (a piece is a few hundred KiB)."""
    if not isinstance(answer, RawResponse):
        await send_bytes(send, status, orjson.dumps(answer), headers)
        return
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    last = len(answer.chunks) - 1
    for index, body in enumerate(answer.chunks):
        await send({"type": "http.response.body", "body": body, "more_body": index < last})


async def send_json(send: Send, status: int, value: Any, headers: Headers | None = None) -> None:
    """A complete JSON response."""
    await send_bytes(send, status, orjson.dumps(value), JSON_HEADERS + (headers or []))


async def send_empty(send: Send, status: int, headers: Headers | None = None) -> None:
    """A response with no body (202, 204, 405 ...)."""
    await send_bytes(send, status, b"", headers or [])


async def send_error(send: Send, exc: GatewayError, request_id: Any = None, headers: Headers | None = None) -> None:
    """A JSON-RPC error response carrying the error's own HTTP status."""
    body = error_bytes(request_id, exc.jsonrpc_code, exc.message, exc.data)
    extra = list(headers or [])
    if exc.retry_after_s is not None and not any(name == b"retry-after" for name, _ in extra):
        extra.append((b"retry-after", str(exc.retry_after_s).encode()))
    await send_bytes(send, exc.http_status, body, JSON_HEADERS + extra)


def retry_after(answer: Answer) -> Headers:
    """A Retry-After header for a JSON-RPC error answer that carries `retryAfterSeconds` (e.g. "shutting down")."""
    if isinstance(answer, RawResponse):
        return []  # a result
    failure = answer.get("error")
    data = failure.get("data") if isinstance(failure, dict) else None
    seconds = data.get("retryAfterSeconds") if isinstance(data, dict) else None
    return [(b"retry-after", str(seconds).encode())] if isinstance(seconds, int) else []


def sse_event(message: Answer, event: bytes = b"message") -> bytes:
    """One SSE event carrying one JSON-RPC message (orjson output has no newlines to escape)."""
    if isinstance(message, RawResponse):  # a large result as the child wrote it: copied once, into the event
        return b"".join([b"event: " + event + b"\ndata: ", *message.chunks, b"\n\n"])
    return b"event: " + event + b"\ndata: " + orjson.dumps(message) + b"\n\n"


KEEPALIVE = b": keepalive\n\n"


async def start_stream(send: Send, headers: Headers | None = None) -> None:
    """Send the head of an SSE response."""
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + (headers or [])})


async def stream_chunk(send: Send, data: bytes) -> None:
    """Send part of a streaming body."""
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def end_stream(send: Send) -> None:
    """Close a streaming body."""
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class Disconnect:
    """Watches `receive` for http.disconnect once the body is read (a task; cancel it when done)."""

    def __init__(self, receive: Receive) -> None:
        self.event = asyncio.Event()
        self.on_disconnect: Callable[[], None] | None = None
        self._task = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.event.set()
        if self.on_disconnect is not None:
            self.on_disconnect()

    def close(self) -> None:
        """Stop watching."""
        self._task.cancel()
