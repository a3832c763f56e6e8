"""Streamable HTTP with sessions (2025-03-26 … 2025-11-25) on /mcp/{server}: POST, GET stream, DELETE."""

import asyncio

from mcp_bastion.errors import AtCapacity, ProtocolError, QuotaExceeded
from mcp_bastion.jsonrpc import Kind, Message, classify, dumps, loads, progress_token, result
from mcp_bastion.protocol import HANDSHAKE_VERSIONS, negotiate_version
from mcp_bastion.relay import ClientSession, Gateway, ResponseSlot
from mcp_bastion.relay.quotas import Slot
from mcp_bastion.transports import dispatch
from mcp_bastion.transports.http import (
    JSON_HEADERS,
    KEEPALIVE,
    Disconnect,
    Request,
    end_stream,
    retry_after,
    send_bytes,
    send_empty,
    send_error,
    sse_event,
    start_stream,
    stream_chunk,
)
from mcp_bastion.transports.policy import CallPolicy

SESSION_HEADER = b"mcp-session-id"
# One write to a stream at most: the server pauses a writer whose client lags only between writes, so this bounds
# what a client that stops reading leaves in the server's send buffer.
STREAM_WRITE_MAX_BYTES = 256 * 1024


async def refuse(req: Request, exc: QuotaExceeded) -> None:
    """A quota refusal: 429 with Retry-After, the JSON-RPC error (with `retryAfterSeconds`) as the body."""
    await send_error(req.send, exc, exc.request_id)  # send_error adds Retry-After from the error


class StreamableTransport:
    """The legacy Streamable HTTP endpoint of every server."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.max_body = gateway.settings.max_body_bytes
        self.keepalive_s = gateway.settings.sse_keepalive_s

    async def post(self, req: Request, server: str, body: bytes | None = None) -> None:
        """One client message; a request is answered as JSON, or as SSE when it asked for progress."""
        has_json, has_sse = req.accepts()
        if not (has_json and has_sse):
            raise ProtocolError("Accept must list application/json and text/event-stream", status=406)
        if not req.is_json():
            raise ProtocolError("Content-Type must be application/json", status=415)
        message = loads(body if body is not None else await req.body(self.max_body))
        try:
            await self._message(req, server, message, has_sse)
        except (ProtocolError, AtCapacity) as exc:
            exc.request_id = dispatch.request_id_of(message)
            raise
        except QuotaExceeded as exc:
            exc.request_id = dispatch.request_id_of(message)
            await refuse(req, exc)

    async def _message(self, req: Request, server: str, message: Message, has_sse: bool) -> None:
        kind = classify(message)
        session_id = req.header(SESSION_HEADER)
        if kind is Kind.REQUEST and message["method"] == "initialize":
            if session_id is not None:
                raise ProtocolError("initialize must not carry an Mcp-Session-Id")
            await self._initialize(req, server, message)
            return
        session = self._session(req, server, session_id)
        version = req.header(b"mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_VERSIONS:
            raise ProtocolError(f"Unsupported MCP-Protocol-Version {version[:40]!r}")
        if kind is Kind.REQUEST:
            await self._request(req, session, message, has_sse)
        elif kind is Kind.NOTIFICATION:
            await send_empty(req.send, 202)
            await dispatch.notification(self.gateway, session, message)
        else:
            await send_empty(req.send, 202)
            await dispatch.client_response(session, message)

    def _session(self, req: Request, server: str, session_id: str | None) -> ClientSession:
        if session_id is None:
            raise ProtocolError("Bad Request: Mcp-Session-Id header is required")
        return self.gateway.find_session(session_id, server=server, principal=req.principal)

    async def _initialize(self, req: Request, server: str, message: Message) -> None:
        session = await self.gateway.open_session(
            server, era="streamable", principal=req.principal, init=message, credential=req.credential
        )
        params = message.get("params") or {}
        session.protocol_version = negotiate_version(params.get("protocolVersion"))
        session.client_info = params.get("clientInfo")
        answer = result(message["id"], dispatch.initialize_result(session.backend, message))
        headers = [*JSON_HEADERS, (SESSION_HEADER, session.id.encode())]
        await send_bytes(req.send, 200, dumps(answer), headers)

    async def _request(self, req: Request, session: ClientSession, message: Message, has_sse: bool) -> None:
        try:
            session.admit(message["id"])  # nothing awaits between this and the relay's in-flight entry
        except QuotaExceeded as exc:
            self.gateway.inflight_refused(session, exc)
            raise
        slot = ResponseSlot(streaming=has_sse and progress_token(message) is not None)
        policy = CallPolicy(req, self.gateway.spec(session.server), self.gateway.audit, self.gateway.limiter)
        await dispatch.request(session.backend, message, slot, session=session, policy=policy)
        if slot.stream is None:
            answer = await slot.future
            body, headers = dumps(answer), JSON_HEADERS + retry_after(answer)
            del answer, slot  # the parsed answer goes before its bytes are sent: one copy in flight (Issue 11 item 1)
            await send_bytes(req.send, 200, body, headers)
            return
        await start_stream(req.send)
        while True:
            if slot.future.done() and slot.stream.empty():
                break
            getter = asyncio.ensure_future(slot.stream.get())
            done, _ = await asyncio.wait(
                {getter, slot.future}, timeout=self.keepalive_s, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                await stream_chunk(req.send, sse_event(getter.result()))
            else:
                getter.cancel()
                if not done:
                    await stream_chunk(req.send, KEEPALIVE)
        await stream_chunk(req.send, sse_event(slot.future.result()))
        await end_stream(req.send)

    async def get(self, req: Request, server: str) -> None:
        """The standalone stream: server notifications and child→client requests of the session."""
        _, has_sse = req.accepts()
        if not has_sse:
            raise ProtocolError("Accept must list text/event-stream", status=406)
        session = self._session(req, server, req.header(SESSION_HEADER))
        try:
            slot = self.gateway.claim_stream(session.principal, server)
        except QuotaExceeded as exc:
            await refuse(req, exc)
            return
        await pump_outbox(req, session, self.keepalive_s, [(SESSION_HEADER, session.id.encode())], slot=slot)

    async def delete(self, req: Request, server: str) -> None:
        """End the session."""
        session = self._session(req, server, req.header(SESSION_HEADER))
        await self.gateway.end_session(session)
        await send_empty(req.send, 200)


async def pump_outbox(
    req: Request,
    session: ClientSession,
    keepalive_s: float,
    headers: list[tuple[bytes, bytes]],
    *,
    slot: Slot,
    first: bytes = b"",
) -> None:
    """Stream a session's outbox as SSE until the client leaves, the session ends or the gateway shuts down.

    One event to wait on (set by new messages, the session's end, the client leaving and the keepalive timer)
    and everything queued written in one chunk: this runs once per relayed answer on the SSE transport.
    A client that stops reading blocks the write; if its backlog passes the session's byte budget, the session
    overflows and cancels this task: the response is abandoned unfinished, which makes the server close the
    connection (finishing it would wait on the same client). `slot` (the caller's stream quota) is released when
    the connection is gone, so abandoned connections still count against their principal.
    """
    loop = asyncio.get_running_loop()
    disconnect = Disconnect(req.receive)
    wakeup = session.wakeup
    disconnect.on_disconnect = wakeup.set
    beat = [False]

    def tick() -> None:
        beat[0] = True
        wakeup.set()

    timer = loop.call_later(keepalive_s, tick)
    task = asyncio.current_task()
    assert task is not None  # an ASGI request always runs in a task
    session.readers.add(task)
    abandoned = False
    try:
        await start_stream(req.send, headers)
        if first:
            await stream_chunk(req.send, first)
        while True:
            if session.outbox:
                for chunk in session.take():
                    await _write(req, chunk)
            if session.closed.is_set() or disconnect.event.is_set():
                break
            if session.streams_may_end:  # the gateway is shutting down (Issue 9 item 6)
                await stream_chunk(req.send, session.farewell)
                break
            if beat[0]:
                beat[0] = False
                timer = loop.call_later(keepalive_s, tick)
                await stream_chunk(req.send, KEEPALIVE)
            wakeup.clear()
            if not session.outbox:
                await wakeup.wait()
    except asyncio.CancelledError:
        if not session.overflowed:
            raise
        task.uncancel()
        abandoned = True
    finally:
        timer.cancel()
        session.readers.discard(task)
        session.touch()
        if abandoned:
            _release_on_disconnect(disconnect, slot)
        else:
            disconnect.close()
            slot.release()
            await end_stream(req.send)


async def _write(req: Request, chunk: bytes) -> None:
    if len(chunk) <= STREAM_WRITE_MAX_BYTES:
        await stream_chunk(req.send, chunk)
        return
    for start in range(0, len(chunk), STREAM_WRITE_MAX_BYTES):
        await stream_chunk(req.send, chunk[start : start + STREAM_WRITE_MAX_BYTES])


def _release_on_disconnect(disconnect: Disconnect, slot: Slot) -> None:
    """Keep watching the abandoned connection; its stream slot frees when the client is really gone."""
    if disconnect.event.is_set():
        slot.release()
    else:
        disconnect.on_disconnect = slot.release
