"""Streamable HTTP with sessions (2025-03-26 … 2025-11-25) on /mcp/{server}: POST, GET stream, DELETE."""

import asyncio
from typing import Any

from mcp_bastion.errors import AtCapacity, ProtocolError, QuotaExceeded
from mcp_bastion.jsonrpc import Answer, Kind, Message, RawResponse, classify, dumps, loads, progress_token, result
from mcp_bastion.protocol import HANDSHAKE_VERSIONS, negotiate_version
from mcp_bastion.relay import ClientSession, Gateway, ResponseSlot
from mcp_bastion.relay.quotas import Slot
from mcp_bastion.relay.replay import GET_STREAM, ReplayBuffer, frame, parse_event_id
from mcp_bastion.relay.sessions import EVENT_HEAD, EVENT_TAIL
from mcp_bastion.transports import dispatch
from mcp_bastion.transports.http import (
    JSON_HEADERS,
    KEEPALIVE,
    Disconnect,
    Request,
    end_stream,
    retry_after,
    send_answer,
    send_bytes,
    send_empty,
    send_error,
    start_stream,
    stream_chunk,
)
from mcp_bastion.transports.policy import CallPolicy

SESSION_HEADER = b"mcp-session-id"
LAST_EVENT_ID = b"last-event-id"
# From this revision on, clients accept an event with an id and empty data (a priming event); older SDKs fail on it
# (the TypeScript SDK server primes POST streams only from this revision on too).
PRIMING_VERSION = "2025-11-25"
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
        return self.gateway.find_session(session_id, server=server, principal=req.principal, credential=req.credential)

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
        eager = has_sse and progress_token(message) is not None
        # Issue 11 item 6: a per-session child may ask the client something during the call; the answer's slot
        # takes it, and the answer turns into an SSE stream if it comes before the result.
        slot = ResponseSlot(streaming=eager or (has_sse and session.own_backend))
        client_id = message["id"]
        if slot.stream is not None:
            session.post_streams[client_id] = slot
        try:
            policy = CallPolicy(req, self.gateway.spec(session.server), self.gateway.audit, self.gateway.limiter)
            await dispatch.request(session.backend, message, slot, session=session, policy=policy)
            first = None if eager or slot.stream is None else await _first_message(slot)
            if slot.stream is None or (not eager and first is None):
                answer = await slot.future
                if isinstance(answer, RawResponse):  # a large result: its pieces as read (Issue 11 item 1)
                    await send_answer(req.send, 200, answer, JSON_HEADERS)
                    return
                body, headers = dumps(answer), JSON_HEADERS + retry_after(answer)
                del answer, slot  # the parsed answer goes before its bytes are sent: one copy (Issue 11 item 1)
                await send_bytes(req.send, 200, body, headers)
                return
            await self._stream_answer(req, session, slot, first)
        finally:
            if session.post_streams.get(client_id) is not None:
                del session.post_streams[client_id]

    async def _stream_answer(
        self, req: Request, session: ClientSession, slot: ResponseSlot, first: Message | None
    ) -> None:
        """The answer as an SSE stream: related messages as they come, then the result.

        Issue 11 item 7: each event carries an id and is kept for replay, so a client whose connection drops
        resumes this stream with GET + Last-Event-ID (this keeps writing, into the void, until the answer).
        """
        assert slot.stream is not None
        replay = session.replay
        stream = replay.open_stream() if replay is not None else 0
        try:
            await start_stream(req.send)
            if replay is not None and (session.protocol_version or "") >= PRIMING_VERSION:
                await stream_chunk(req.send, replay.priming(stream))
            if first is not None:
                await _send_event(req, replay, stream, first)
            while True:
                if slot.future.done() and slot.stream.empty():
                    break
                getter = asyncio.ensure_future(slot.stream.get())
                waiters: set[asyncio.Future[Any]] = {getter, slot.future}
                done, _ = await asyncio.wait(waiters, timeout=self.keepalive_s, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await _send_event(req, replay, stream, getter.result())
                else:
                    getter.cancel()
                    if not done:
                        await stream_chunk(req.send, KEEPALIVE)
            await _send_event(req, replay, stream, slot.future.result(), final=True)
        finally:
            if replay is not None:
                replay.close_stream(stream)
        await end_stream(req.send)

    async def get(self, req: Request, server: str) -> None:
        """The standalone stream: server notifications and child→client requests of the session."""
        _, has_sse = req.accepts()
        if not has_sse:
            raise ProtocolError("Accept must list text/event-stream", status=406)
        session = self._session(req, server, req.header(SESSION_HEADER))
        resume = _resume_point(session, req.header(LAST_EVENT_ID))
        try:
            slot = self.gateway.claim_stream(session.principal, server)
        except QuotaExceeded as exc:
            await refuse(req, exc)
            return
        headers = [(SESSION_HEADER, session.id.encode())]
        if resume is None:
            await pump_outbox(req, session, self.keepalive_s, headers, slot=slot)
            return
        stream, seq = resume
        assert session.replay is not None  # a resume point needs the session's buffer
        if stream != GET_STREAM:
            await follow_stream(req, session.replay, session, resume, self.keepalive_s, headers, slot=slot)
            return
        replayed = b"".join(b"".join(frame(event)) for event in session.replay.after(GET_STREAM, seq))
        await pump_outbox(req, session, self.keepalive_s, headers, slot=slot, first=replayed)

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


async def follow_stream(
    req: Request,
    replay: ReplayBuffer,
    session: ClientSession,
    resume: tuple[int, int],
    keepalive_s: float,
    headers: list[tuple[bytes, bytes]],
    *,
    slot: Slot,
) -> None:
    """Resume a POST's answer stream on a GET (Issue 11 item 7): the events after the client's Last-Event-ID, then
    the rest as the call goes on, until its answer; only that stream's events, never another's."""
    stream, seq = resume
    disconnect = Disconnect(req.receive)
    disconnect.on_disconnect = replay.changed.set
    try:
        await start_stream(req.send, headers)
        while not (session.closed.is_set() or disconnect.event.is_set()):
            replay.changed.clear()
            for event in replay.after(stream, seq):
                for chunk in frame(event):
                    await _write(req, chunk)
                seq = event.seq
                if event.final:
                    return
            if stream not in replay.open:
                return  # it ended with an answer too large to keep: the client hears the stream end
            try:
                await asyncio.wait_for(replay.changed.wait(), keepalive_s)
            except TimeoutError:
                await stream_chunk(req.send, KEEPALIVE)
    finally:
        disconnect.close()
        slot.release()
        await end_stream(req.send)


def _resume_point(session: ClientSession, last_event_id: str | None) -> tuple[int, int] | None:
    """Where a GET with Last-Event-ID resumes (stream, last event seen), or None for a fresh GET stream.

    Raises:
        ProtocolError: the id is not one of this session's, or names a POST stream whose events are gone.
    """
    replay = session.replay
    if last_event_id is None or replay is None:
        return None
    resume = parse_event_id(last_event_id)
    if resume is None or resume[1] > replay.seq or not replay.resumable(resume[0]):
        raise ProtocolError("Last-Event-ID names no event this session can replay")
    return resume


async def _first_message(slot: ResponseSlot) -> Message | None:
    """Hold the head (Issue 11 item 6): the first related message if one comes before the answer, else None.

    A JSON answer already waits for the result before its head is sent, so holding costs a fast call nothing;
    a child→client request arriving first turns the answer into an SSE stream that carries it.
    """
    assert slot.stream is not None
    if not slot.stream.empty():
        return slot.stream.get_nowait()
    getter = asyncio.ensure_future(slot.stream.get())
    waiters: set[asyncio.Future[Any]] = {getter, slot.future}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()  # a message queued as the answer came stays queued, and still turns the answer into a stream
    return None if slot.stream.empty() else slot.stream.get_nowait()


async def _send_event(
    req: Request, replay: ReplayBuffer | None, stream: int, message: Answer, *, final: bool = False
) -> None:
    """One message on a POST's answer stream, with an id and kept for replay when the session is resumable."""
    body = dumps(message)
    head = EVENT_HEAD if replay is None else replay.head(stream, body, final=final)
    if len(body) < STREAM_WRITE_MAX_BYTES:
        await stream_chunk(req.send, head + body + EVENT_TAIL)
        return
    await stream_chunk(req.send, head)
    await _write(req, body)
    await stream_chunk(req.send, EVENT_TAIL)


def _release_on_disconnect(disconnect: Disconnect, slot: Slot) -> None:
    """Keep watching the abandoned connection; its stream slot frees when the client is really gone."""
    if disconnect.event.is_set():
        slot.release()
    else:
        disconnect.on_disconnect = slot.release
