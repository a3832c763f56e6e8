"""Stateless Streamable HTTP (2026-07-28): every POST is self-contained; closing the stream cancels the call."""

import asyncio
from collections.abc import Callable
from typing import Any

from mcp_bastion.errors import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MISSING_CLIENT_CAPABILITY,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    ProtocolError,
)
from mcp_bastion.jsonrpc import (
    Answer,
    Kind,
    Message,
    RawResponse,
    classify,
    loads,
    notification,
    progress_token,
    result,
)
from mcp_bastion.protocol import (
    ALL_VERSIONS,
    CACHEABLE,
    CLIENT_CAPABILITIES_META,
    LIST_CHANGED,
    MODERN_METHODS,
    MODERN_VERSIONS,
    NAME_BEARING,
    PROTOCOL_VERSION_META,
    SERVER_INFO_META,
    SUBSCRIPTION_ID_META,
    decode_header_value,
)
from mcp_bastion.relay import Backend, Gateway, ResponseSlot
from mcp_bastion.relay.input_required import InputBridge, input_responses, known_tools
from mcp_bastion.relay.input_states import InputStates, StateRefused, new_instance_id
from mcp_bastion.relay.sessions import SHUTDOWN_EVENT
from mcp_bastion.sealing import Sealer
from mcp_bastion.transports import dispatch
from mcp_bastion.transports.dispatch import request_id_of
from mcp_bastion.transports.http import (
    JSON_HEADERS,
    KEEPALIVE,
    Disconnect,
    Request,
    end_stream,
    retry_after,
    send_answer,
    send_bytes,
    sse_event,
    start_stream,
    stream_chunk,
)
from mcp_bastion.transports.policy import FORBIDDEN, CallPolicy

ROUTING_HEADERS = (b"mcp-protocol-version", b"mcp-method", b"mcp-name")
LISTEN_QUEUE_MAX = 256  # list-changed notifications buffered for one slow listener
LISTEN_URIS_MAX = 256  # resourceSubscriptions on one listen stream: each is a subscribe to the child
# HTTP status of a JSON-RPC error code on this wire (spec table; anything else is 200).
ERROR_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    MISSING_CLIENT_CAPABILITY: 400,
    METHOD_NOT_FOUND: 404,
}


def unsupported(requested: Any) -> ProtocolError:
    """The -32022 rejection naming what we speak."""
    data = {"supported": list(ALL_VERSIONS), "requested": requested}
    return ProtocolError("Unsupported protocol version", code=UNSUPPORTED_PROTOCOL_VERSION, data=data)


def header_value(req: Request, name: bytes) -> str | None:
    """A routing header's value: surrounding whitespace is not part of a field value (RFC 9110), base64 undone."""
    raw = req.header(name)
    return decode_header_value(raw.strip()) if raw is not None else None


def check_param_headers(req: Request, backend: Backend, message: Message) -> None:
    """`Mcp-Param-*` headers must mirror the arguments the tool's schema marks with `x-mcp-header` (-32020).

    Uses the MCP SDK's validator, so the gateway agrees with the reference implementation to the letter.
    """
    params = message.get("params") or {}
    schema = backend.tool_schemas.get(str(params.get("name")))
    if schema is None or not schema.has_param_headers:
        return
    pairs = [
        (k.decode("latin-1"), v.decode("latin-1").strip()) for k, v in req.raw_headers if k.startswith(b"mcp-param-")
    ]
    headers = dict(pairs)
    if len(headers) != len(pairs):
        raise ProtocolError("an Mcp-Param header appears more than once", code=HEADER_MISMATCH)
    # Imported lazily: the SDK costs ~20 MiB of RSS, and only tools that mirror headers need it.
    from mcp.shared.inbound import validate_mcp_param_headers

    arguments = params.get("arguments")
    rejection = validate_mcp_param_headers(
        schema.input_schema, arguments if isinstance(arguments, dict) else {}, headers
    )
    if rejection is not None:
        raise ProtocolError(rejection.message, code=HEADER_MISMATCH)


def check_envelope(req: Request, message: Message) -> None:
    """The 2026-07-28 validation ladder: _meta envelope, header/body agreement, supported version.

    Raises:
        ProtocolError: 400 with -32602, -32020 or -32022.
    """
    seen: set[bytes] = set()
    for name, _ in req.raw_headers:
        if name in ROUTING_HEADERS:
            if name in seen:
                raise ProtocolError(f"{name.decode()} header appears more than once", code=HEADER_MISMATCH)
            seen.add(name)
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict) or PROTOCOL_VERSION_META not in meta or CLIENT_CAPABILITIES_META not in meta:
        raise ProtocolError(
            f"params._meta must carry {PROTOCOL_VERSION_META!r} and {CLIENT_CAPABILITIES_META!r}", code=INVALID_PARAMS
        )
    version = meta[PROTOCOL_VERSION_META]
    if header_value(req, b"mcp-protocol-version") != version:
        raise ProtocolError("MCP-Protocol-Version header does not match the request envelope", code=HEADER_MISMATCH)
    method = message["method"]
    if header_value(req, b"mcp-method") != method:
        raise ProtocolError("Mcp-Method header does not match the request body's method", code=HEADER_MISMATCH)
    name_key = NAME_BEARING.get(method)
    if name_key is not None and isinstance(params, dict):
        body_value = params.get(name_key)
        if body_value is not None and header_value(req, b"mcp-name") != body_value:
            raise ProtocolError(f"Mcp-Name header does not match the request body's {name_key!r}", code=HEADER_MISMATCH)
    if version not in MODERN_VERSIONS:
        raise unsupported(version)


def resource_subscriptions(filters: Message) -> list[str]:
    """The `resourceSubscriptions` of a listen filter, in order, without repeats (Issue 11 item 5).

    Raises:
        ProtocolError: -32602 if it is not a list of strings, or lists more than LISTEN_URIS_MAX URIs.
    """
    asked = filters.get("resourceSubscriptions")
    if asked is None:
        return []
    if not isinstance(asked, list) or not all(isinstance(uri, str) for uri in asked):
        raise ProtocolError("notifications.resourceSubscriptions must be a list of URIs", code=INVALID_PARAMS)
    uris = list(dict.fromkeys(asked))
    if len(uris) > LISTEN_URIS_MAX:
        raise ProtocolError(f"at most {LISTEN_URIS_MAX} resourceSubscriptions per stream", code=INVALID_PARAMS)
    return uris


class Listener:
    """One subscriptions/listen stream: the list-changed types it opted in to and the resource URIs it may hear of."""

    def __init__(self, subscription_id: Any, wanted: set[str], uris: set[str]) -> None:
        self.subscription_id = subscription_id
        self.wanted = wanted
        self.uris = uris  # Issue 11 item 5: authorized resourceSubscriptions (the child refused none of them)
        self.queue: asyncio.Queue[Message] = asyncio.Queue(LISTEN_QUEUE_MAX)

    def push(self, message: Message) -> None:
        """Called by the backend for every broadcast notification and the resource updates of its URIs."""
        method = message.get("method", "")
        if method == "notifications/resources/updated":
            wanted = (message.get("params") or {}).get("uri") in self.uris
        else:
            wanted = LIST_CHANGED.get(method) in self.wanted
        if not wanted or self.queue.full():
            return
        params = dict(message.get("params") or {})
        params["_meta"] = {**(params.get("_meta") or {}), SUBSCRIPTION_ID_META: self.subscription_id}
        self.queue.put_nowait({**message, "params": params})


def noop() -> None:
    """Nothing to keep alive (a shared child's listen stream)."""


class ModernTransport:
    """2026-07-28 requests on /mcp/{server}."""

    def __init__(self, gateway: Gateway, *, sealer: Sealer | None = None, instance_id: str | None = None) -> None:
        self.gateway = gateway
        # Issue 11 item 5: per-session calls waiting for their client's input, named by sealed request states
        self.states = InputStates(gateway, sealer or Sealer(), instance_id or new_instance_id())
        self.max_body = gateway.settings.max_body_bytes
        self.keepalive_s = gateway.settings.sse_keepalive_s

    async def close(self) -> None:
        """The lifespan ends: calls parked between rounds end, and their children with them."""
        await self.states.close()

    async def post(self, req: Request, server: str, body: bytes) -> None:
        """Validate, then answer locally (discover) or relay to the server's shared child."""
        has_json, has_sse = req.accepts()
        if not has_json:
            raise ProtocolError("Accept must list application/json", status=406)
        policy = CallPolicy(req, self.gateway.spec(server), self.gateway.audit, self.gateway.limiter)
        named = header_value(req, b"mcp-name")
        if named is not None and header_value(req, b"mcp-method") == "tools/call" and not policy.may_call(named):
            # Decided from the header before the body is parsed; the body is checked again after parsing.
            policy.record("mcp.call", method="tools/call", tool=named[:128], outcome="forbidden")
            raise ProtocolError("this token may not call that tool", code=FORBIDDEN, status=403)
        message = loads(body)
        try:
            await self._message(req, server, message, policy, has_sse=has_sse)
        except ProtocolError as exc:
            exc.request_id = request_id_of(message)
            raise

    async def _message(self, req: Request, server: str, message: Message, policy: CallPolicy, *, has_sse: bool) -> None:
        kind = classify(message)
        if kind is Kind.RESPONSE:
            raise ProtocolError("clients must not post responses on this protocol revision")
        if kind is Kind.NOTIFICATION:
            version = header_value(req, b"mcp-protocol-version")
            if version not in MODERN_VERSIONS:
                raise unsupported(version)
            await send_bytes(req.send, 202, b"", [])
            return
        check_envelope(req, message)
        method = message["method"]
        if method not in MODERN_METHODS:
            raise ProtocolError(f"Method not found: {method[:80]}", code=METHOD_NOT_FOUND, status=404)
        if self.gateway.spec(server).isolation != "shared":
            await self._per_session(req, server, message, policy, has_sse=has_sse)
            return
        backend = await self.gateway.shared_backend(server)
        if method == "server/discover":
            await self._send(req, result(message["id"], self._discover(backend)), method, backend)
        elif method == "subscriptions/listen":
            if not has_sse:
                raise ProtocolError("subscriptions/listen needs Accept: text/event-stream", status=406)
            await self._listen(req, backend, message, policy)
        else:
            if method == "tools/call":
                check_param_headers(req, backend, message)
            streaming = has_sse and progress_token(message) is not None
            await self._relay(req, backend, message, policy, streaming=streaming)

    async def _per_session(
        self, req: Request, server: str, message: Message, policy: CallPolicy, *, has_sse: bool
    ) -> None:
        """Issue 11 item 5: each request gets its own child; one that asks for input is parked between rounds."""
        method = message["method"]
        if method == "subscriptions/listen" and not has_sse:
            raise ProtocolError("subscriptions/listen needs Accept: text/event-stream", status=406)
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        responses = input_responses(params)
        sealed = params.pop("requestState", None)
        params.pop("inputResponses", None)  # the gateway's to use: the child never sees them
        refusal = await policy.check(message)  # the one authorizer and the per-tool limits, on every round
        if refusal is not None:
            await self._send(req, refusal, method, None)
            return
        if sealed is None:
            bridge = await self.states.open(server, message, principal=req.principal, credential=req.credential)
        else:
            try:
                bridge = self.states.claim(sealed, server=server, principal=req.principal, message=message)
            except StateRefused as exc:
                policy.record("session.request_state", outcome="denied", reason=exc.reason, method=method)
                raise
        try:
            await self._round(req, bridge, message, policy, responses, has_sse=has_sse, first=sealed is None)
        finally:
            bridge.detach()
            if bridge.state_id is None:  # not parked for another round: the call is over, its child goes
                await self.states.end(bridge)

    async def _round(
        self,
        req: Request,
        bridge: InputBridge,
        message: Message,
        policy: CallPolicy,
        responses: dict[str, Message],
        *,
        has_sse: bool,
        first: bool,
    ) -> None:
        """One request of a per-session call: answered by the call's end, or by what the child asks next."""
        method = message["method"]
        backend = bridge.backend
        if method in ("server/discover", "ping"):
            answer = self._discover(backend) if method == "server/discover" else {}
            await self._send(req, result(message["id"], answer), method, backend)
            return
        if method == "subscriptions/listen":  # the stream's own child, kept (not idled out) while the stream lives
            await self._listen(req, backend, message, policy, alive=bridge.session.touch)
            return
        streaming = has_sse and progress_token(message) is not None
        view = ResponseSlot(streaming=streaming)
        bridge.attach(view, message, responses)
        if first:
            if method == "tools/call":
                await known_tools(backend)  # a fresh child: its schemas decide the Mcp-Param-* check
                check_param_headers(req, backend, message)
            sink = policy.wrap(message, bridge)
            bridge.request_id = await backend.forward(message, sink, session=bridge.session, strip_modern=True)
        await self._answer(req, backend, view, bridge.request_id, method, streaming=streaming)

    def _discover(self, backend: Backend) -> Message:
        init = backend.init_result or {}
        found: Message = {"supportedVersions": list(ALL_VERSIONS), "capabilities": init.get("capabilities", {})}
        if init.get("instructions"):
            found["instructions"] = init["instructions"]
        return found

    async def _relay(
        self, req: Request, backend: Backend, message: Message, policy: CallPolicy, *, streaming: bool
    ) -> None:
        method = message["method"]
        slot = ResponseSlot(streaming=streaming)
        request_id = await dispatch.request(backend, message, slot, session=None, policy=policy, modern=True)
        await self._answer(req, backend, slot, request_id, method, streaming=streaming)

    async def _answer(
        self, req: Request, backend: Backend, slot: ResponseSlot, request_id: int, method: str, *, streaming: bool
    ) -> None:
        """Send what `slot` gets (as JSON, or as SSE with the call's notifications); a disconnect cancels the call."""
        disconnect = Disconnect(req.receive)
        try:
            if streaming:
                await self._stream(req, backend, slot, disconnect, request_id, method)
                return
            # Closing the connection is cancellation on this revision: the watcher cancels the call, which
            # resolves the slot, so one await covers both outcomes without a second task per request.
            disconnect.on_disconnect = lambda: backend.cancel_soon(request_id, "client closed the connection")
            answer = await slot.future
            if not disconnect.event.is_set():
                await self._send(req, answer, method, backend)
        finally:
            disconnect.close()

    async def _stream(
        self, req: Request, backend: Backend, slot: ResponseSlot, disconnect: Disconnect, request_id: int, method: str
    ) -> None:
        assert slot.stream is not None
        await start_stream(req.send)
        gone = asyncio.ensure_future(disconnect.event.wait())
        try:
            while not (slot.future.done() and slot.stream.empty()):
                getter = asyncio.ensure_future(slot.stream.get())
                waiters: set[asyncio.Future[Any]] = {getter, slot.future, gone}
                done, _ = await asyncio.wait(waiters, timeout=self.keepalive_s, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await stream_chunk(req.send, sse_event(getter.result()))
                    continue
                getter.cancel()
                if gone in done:
                    await backend.cancel(request_id, "client closed the connection")
                    return
                if not done:
                    await stream_chunk(req.send, KEEPALIVE)
            await stream_chunk(req.send, sse_event(finish(slot.future.result(), method, backend)))
        finally:
            gone.cancel()
            await end_stream(req.send)

    async def _send(self, req: Request, answer: Answer, method: str, backend: Backend | None) -> None:
        status = 200
        if isinstance(answer, dict) and "error" in answer:
            status = ERROR_STATUS.get(answer["error"].get("code"), 200)
        headers = JSON_HEADERS + retry_after(answer)
        await send_answer(req.send, status, finish(answer, method, backend), headers)

    async def _listen(
        self, req: Request, backend: Backend, message: Message, policy: CallPolicy, alive: Callable[[], None] = noop
    ) -> None:
        """A listen stream holds one of the principal's stream slots, as GET and HTTP+SSE streams do (429 past it)."""
        slot = self.gateway.claim_stream(req.principal, backend.name)
        try:
            await self._listen_stream(req, backend, message, policy, alive)
        finally:
            slot.release()

    async def _listen_stream(
        self, req: Request, backend: Backend, message: Message, policy: CallPolicy, alive: Callable[[], None]
    ) -> None:
        filters = (message.get("params") or {}).get("notifications") or {}
        wanted = {key for key in LIST_CHANGED.values() if filters.get(key) is True}
        asked = resource_subscriptions(filters)
        listener = Listener(message["id"], wanted, authorized_uris(asked, policy))
        try:
            await backend.listen(listener)  # subscribes the child to URIs nobody held (refcounted with sessions)
        except BaseException:
            backend.unlisten(listener)
            raise
        disconnect = Disconnect(req.receive)
        ended = self.gateway.watch(req.credential)  # set when the client leaves, its token is revoked or we shut down
        disconnect.on_disconnect = ended.set
        gone = asyncio.ensure_future(ended.wait())
        honored: Message = {k: True for k in wanted}
        if listener.uris:
            honored["resourceSubscriptions"] = [uri for uri in asked if uri in listener.uris]
        ack = notification(
            "notifications/subscriptions/acknowledged",
            {"notifications": honored, "_meta": {SUBSCRIPTION_ID_META: message["id"]}},
        )
        try:
            await start_stream(req.send)
            await stream_chunk(req.send, sse_event(ack))
            while True:
                alive()  # a per-session stream's child is not idled out while it streams
                getter = asyncio.ensure_future(listener.queue.get())
                done, _ = await asyncio.wait(
                    {getter, gone}, timeout=self.keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    await stream_chunk(req.send, sse_event(getter.result()))
                    continue
                getter.cancel()
                if gone in done or not backend.ready:
                    if self.gateway.closing:  # Issue 9 item 6: the stream ends at once, saying why
                        await stream_chunk(req.send, SHUTDOWN_EVENT)
                    return
                await stream_chunk(req.send, KEEPALIVE)
        finally:
            backend.unlisten(listener)
            self.gateway.unwatch(ended)
            gone.cancel()
            disconnect.close()
            await end_stream(req.send)


def authorized_uris(asked: list[str], policy: CallPolicy) -> set[str]:
    """The URIs of `asked` this caller may read (the one authorizer); each refused one is audited, none listened to."""
    allowed = set()
    for uri in asked:
        if policy.grant.allows("resource", uri):
            allowed.add(uri)
        else:
            policy.record("mcp.call", method="subscriptions/listen", outcome="forbidden", uri=uri[:256])
    return allowed


def finish(answer: Answer, method: str, backend: Backend | None) -> Answer:
    """Shape a result for the 2026-07-28 wire: resultType, cache hints on lists, serverInfo in _meta."""
    if isinstance(answer, RawResponse):
        answer = finish_raw(answer, method, backend)
        if isinstance(answer, RawResponse):
            return answer
    value = answer.get("result")
    if not isinstance(value, dict) or backend is None:
        return answer
    complete = value.setdefault("resultType", "complete") == "complete"  # an InputRequiredResult is not cached
    if complete and method in CACHEABLE:
        # private: what a caller sees may be filtered by its token's scopes
        value.setdefault("ttlMs", 0)
        value.setdefault("cacheScope", "private")
    info = (backend.init_result or {}).get("serverInfo")
    if info is not None:
        meta = value.get("_meta")
        if not isinstance(meta, dict):
            value["_meta"] = {SERVER_INFO_META: info}
        else:
            meta.setdefault(SERVER_INFO_META, info)
    return answer


def finish_raw(answer: RawResponse, method: str, backend: Backend | None) -> Answer:
    """`finish` for a large result relayed as its bytes (Issue 11 item 1): the members are written into it, unless
    it may hold one already (then it comes back parsed, to be finished like any answer)."""
    info = (backend.init_result or {}).get("serverInfo") if backend is not None else None
    members: Message = {"resultType": "complete"}
    if info is not None:
        members["_meta"] = {SERVER_INFO_META: info}
    if method not in CACHEABLE and answer.add_members(members):
        return answer
    return answer.parse()
