"""One child's side of the relay: gateway-unique ids, the pending map, progress and cancellation mapping.

Every request gets a fresh integer id on the way in and its own id back on the way out, so clients that all
number their requests 1, 2, 3 never see each other's answers. Pure bookkeeping plus `child.send`.

Session state a shared child holds once for everyone is kept per client session here (Issue 11 items 3 and 4):
resource subscriptions are reference-counted (the child is subscribed to a URI while any session is), log levels
are filtered per session (the child runs at the most verbose level anyone asked for), and a child's log message
goes only to the client it provably belongs to (see `_child_log`).
"""

import asyncio
import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any

from mcp_bastion import __version__
from mcp_bastion.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    REQUEST_TIMEOUT,
    SERVER_UNAVAILABLE,
    ChildError,
    ChildUnavailable,
    ProtocolError,
)
from mcp_bastion.jsonrpc import (
    Answer,
    Message,
    RawResponse,
    dumps,
    error,
    is_error,
    notification,
    parsed,
    progress_token,
    result,
)
from mcp_bastion.protocol import LATEST_HANDSHAKE_VERSION, LIST_CHANGED, MODERN_META_KEYS
from mcp_bastion.relay.sinks import Listening, ResponseSlot, Sink
from mcp_bastion.supervisor import Child, Clock, ServerHandle, SystemClock
from mcp_bastion.supervisor.clock import Cancellable

if TYPE_CHECKING:
    from mcp_bastion.relay.sessions import ClientSession

log = logging.getLogger("mcp_bastion.relay")

GATEWAY_INFO = {"name": "mcp-bastion", "version": __version__}
BROADCAST = frozenset(LIST_CHANGED)
# RFC 5424 severities as MCP names them, most verbose first (Issue 11 item 4: a session gets a level and above).
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
SEVERITY = {name: rank for rank, name in enumerate(LOG_LEVELS)}
MIB = 1024 * 1024
HELD = 0  # the gateway id a held call has in its session's in-flight map (no real id is 0): it still counts
# Issue 11 item 1: the answers the gateway relays as the child wrote them when large (jsonrpc.RawResponse): nothing
# reads or filters their results. Every other answer (lists, which are filtered by scope; the gateway's own
# requests) is parsed, so a method added later is parsed until it is listed here.
PASSED_RAW = frozenset({"tools/call", "resources/read", "prompts/get"})


class ToolSchema:
    """A tool's input schema, and whether it mirrors arguments into Mcp-Param-* headers (2026-07-28)."""

    __slots__ = ("has_param_headers", "input_schema")

    def __init__(self, input_schema: Any) -> None:
        self.input_schema = input_schema
        self.has_param_headers = b'"x-mcp-header"' in dumps(input_schema) if isinstance(input_schema, dict) else False


class Pending:
    """A request in flight to the child."""

    __slots__ = ("client_id", "client_token", "heard", "internal", "method", "sent", "session", "sink", "timer")

    def __init__(
        self, sink: Sink, client_id: Any, method: str, session: "ClientSession | None", *, internal: bool = False
    ) -> None:
        self.sink = sink
        self.internal = internal  # the gateway's own request (initialize, ping, a refcounted subscribe): no client's
        self.client_id = client_id
        self.method = method
        self.session = session
        self.client_token: Any = None
        self.timer: Cancellable | None = None
        self.sent = 0.0  # when it went to the child (the total maximum counts from here)
        self.heard = 0.0  # its last sign of life: sent, or a progress notification (the idle timeout counts from here)


class Backend:
    """The relay state of one child process (shared by many clients, or owned by one session)."""

    def __init__(
        self,
        name: str,
        *,
        timeout_s: float,
        max_total_s: float = math.inf,
        clock: Clock | None = None,
        init_params: Message | None = None,
        hold_s: float = 0.0,
        share_logs: bool = False,
    ) -> None:
        self.name = name
        self.share_logs = share_logs  # mcp.json "shareLogs": every session gets every log message (Issue 11 item 4)
        self.child_log_level: str | None = None  # the level last set on the child (None: never set since it started)
        self.timeout_s = timeout_s  # idle: no answer and no progress for this long (Issue 11 item 2)
        self.max_total_s = max_total_s  # however much progress it reports, a call ends this long after it was sent
        self.clock: Clock = clock or SystemClock()
        self.hold_s = hold_s  # RESTART_HOLD_S: how long a call may wait for a restarting child (Issue 9 item 2)
        self.handle: ServerHandle | None = None  # the supervisor's handle of a shared server (None: per-session)
        self.init_params = init_params or {
            "protocolVersion": LATEST_HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": GATEWAY_INFO,
        }
        self.child: Child | None = None
        self.init_result: Message | None = None
        self.sessions: set[ClientSession] = set()
        self.listeners: set[Listening] = set()  # 2026-07-28 subscriptions/listen streams (see transports.modern)
        self.owner: ClientSession | None = None  # set for isolation: per-session
        self.pending: dict[int, Pending] = {}
        self._by_token: dict[int, Pending] = {}
        self._server_requests: dict[str, Any] = {}  # our id for a child→client request → the child's id
        self._next_id = 0
        self.tool_schemas: dict[str, ToolSchema] = {}  # from the child's tools/list answers, for header checks
        self._background: set[asyncio.Future[Any]] = set()
        self.calls = 0

    @property
    def ready(self) -> bool:
        """The child runs and has answered initialize."""
        return self.child is not None and self.init_result is not None and self.child.running

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # --- ChildListener -------------------------------------------------------------------------------

    async def child_started(self, child: Child) -> None:
        """Initialize the child once and cache its InitializeResult."""
        self.child = child
        self.init_result = None
        slot = ResponseSlot()
        request_id = self._new_id()
        self.pending[request_id] = Pending(slot, request_id, "initialize", None, internal=True)
        await child.send(
            dumps({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": self.init_params})
        )
        answer = parsed(await slot.future)
        if "error" in answer or not isinstance(answer.get("result"), dict):
            # The child's own words stay in its stderr log: they may carry its secrets, and this text reaches /health.
            code = answer.get("error", {}).get("code") if isinstance(answer.get("error"), dict) else None
            raise ChildError(f"the server refused initialize (JSON-RPC error {code})")
        await child.send(dumps(notification("notifications/initialized")))
        self.init_result = answer["result"]
        self.tool_schemas = {}
        if "tools" in (self.init_result.get("capabilities") or {}):
            self._spawn(self._learn_tools())
        self._spawn(self._restore_state())

    async def _restore_state(self) -> None:
        """A (re)started child knows no subscription and no level: give it what the sessions still hold."""
        self.child_log_level = None
        held = {uri for session in self.sessions for uri in session.subscriptions}
        held.update(uri for listener in self.listeners for uri in listener.uris)  # Issue 11 item 5
        for uri in sorted(held):
            await self._tell("resources/subscribe", {"uri": uri})
        await self._apply_log_level()

    async def _learn_tools(self) -> None:
        """Ask the child for its tools once, so header checks know the schemas before any client lists them."""
        child = self.child
        if child is None:
            return
        slot = ResponseSlot()
        request_id = self._new_id()
        self.pending[request_id] = Pending(slot, request_id, "tools/list", None, internal=True)
        try:
            await child.send(dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}))
        except ChildUnavailable:
            self.pending.pop(request_id, None)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.future, self.timeout_s)
        self.pending.pop(request_id, None)

    async def child_ping(self) -> None:
        """An MCP ping to the child; returns when it answers (the supervisor bounds the wait and cancels)."""
        child = self.child
        if child is None:
            raise ChildUnavailable(f"server {self.name!r} is not running")
        slot = ResponseSlot()
        request_id = self._new_id()
        self.pending[request_id] = Pending(slot, request_id, "ping", None, internal=True)
        try:
            await child.send(dumps({"jsonrpc": "2.0", "id": request_id, "method": "ping"}))
            await slot.future
        finally:
            self.pending.pop(request_id, None)

    def child_message(self, message: Message | RawResponse) -> None:
        """Route one message from the child."""
        if self.handle is not None:
            self.handle.liveness.heard()
        if not isinstance(message, dict):
            self._child_raw(message)
            return
        if "id" in message:
            if "method" in message:
                self._child_request(message)
            else:
                self._child_response(message)
            return
        method = message.get("method")
        if method == "notifications/progress":
            self._child_progress(message)
        elif method == "notifications/message":
            self._child_log(message)
        elif method in BROADCAST:
            if method == "notifications/tools/list_changed":
                self.tool_schemas = {}
                self._spawn(self._learn_tools())
            for session in self.sessions:
                session.push(message)
            for listener in self.listeners:
                listener.push(message)
        elif method == "notifications/resources/updated":
            uri = (message.get("params") or {}).get("uri")
            for session in self.sessions:
                if uri in session.subscriptions:
                    session.push(message)
            for listener in self.listeners:
                if uri in listener.uris:  # Issue 11 item 5: the listen streams that asked for this URI
                    listener.push(message)
        elif method == "notifications/cancelled" and self.owner is not None:
            self.owner.push(message)

    def _child_raw(self, raw: RawResponse) -> None:
        """A large result as the child wrote it: relayed as is to a call whose answer nobody reads, else parsed."""
        pending = self.pending.get(raw.id)
        if pending is not None and not pending.internal and pending.method in PASSED_RAW:
            if self.handle is not None:
                self.handle.liveness.answered()
            self._finish(raw.id, None)
            raw.set_id(pending.client_id)  # written where the child wrote its id
            pending.sink.deliver(raw)
            return
        try:
            message = raw.parse()
        except ProtocolError:
            log.warning("server %s: skipped a stdout line that is not JSON (%d chunks)", self.name, len(raw.chunks))
            return
        del raw  # the parsed message alone stays alive while it is routed
        self.child_message(message)

    def child_oversize(self, request_id: Any, limit_bytes: int) -> None:
        """Fail at once the call whose answer was too large to relay (Issue 11 item 1), not at its timeout."""
        pending = self.pending.get(request_id)
        if pending is not None:
            text = (
                f"the answer of server {self.name!r} to {pending.method} was too large to relay: over "
                f"{limit_bytes} bytes ({limit_bytes / MIB:g} MiB, CHILD_LINE_MAX_BYTES)"
            )
            self._finish(request_id, error(pending.client_id, INTERNAL_ERROR, text, {"maxBytes": limit_bytes}))

    def child_exited(self, reason: str) -> None:
        """Fail every pending call at once; the client learns now, not at its timeout."""
        self.child = None
        self.init_result = None
        self.child_log_level = None
        for request_id in list(self.pending):
            pending = self.pending[request_id]
            message = f"server {self.name!r} stopped before answering ({reason})"
            self._finish(request_id, error(pending.client_id, SERVER_UNAVAILABLE, message))
        self._server_requests.clear()
        if self.owner is not None:
            self.owner.close()

    # --- client → child ------------------------------------------------------------------------------

    async def forward(
        self, message: Message, sink: Sink, *, session: "ClientSession | None" = None, strip_modern: bool = False
    ) -> int:
        """Send a client request to the child under a fresh id; the answer reaches `sink`. Returns our id.

        A call arriving while a shared child restarts waits for it (at most `hold_s`); one already in flight when
        the child died failed at once (`child_exited`): it cannot be replayed safely.
        """
        client_id = message["id"]
        if not self.ready and not await self._hold(client_id, session):
            sink.deliver(self._unavailable(client_id))
            return 0
        child = self.child
        assert child is not None  # ready, and nothing awaited since
        pending = Pending(sink, client_id, message["method"], session)
        request_id = self._new_id()
        params = message.get("params")
        if strip_modern and params:
            _strip_modern_meta(params)
        token = progress_token(message)
        if token is not None:
            pending.client_token = token
            params["_meta"]["progressToken"] = request_id  # type: ignore[index]
            self._by_token[request_id] = pending
        message["id"] = request_id
        self.pending[request_id] = pending
        if session is not None:
            session.inflight[client_id] = request_id
        pending.sent = pending.heard = self.clock.now()
        pending.timer = self.clock.call_later(min(self.timeout_s, self.max_total_s), self._expire, request_id)
        self.calls += 1
        try:
            await child.send(dumps(message))
        except ChildUnavailable as exc:
            if self.handle is None or not self.handle.recovering:
                self._finish(request_id, error(client_id, SERVER_UNAVAILABLE, exc.message))
                return request_id
            # It died before we knew, and this call never reached it: take it back and hold it like a new one.
            self._finish(request_id, None)
            message["id"] = client_id
            if token is not None:
                params["_meta"]["progressToken"] = token  # type: ignore[index]
            return await self.forward(message, sink, session=session)
        return request_id

    # --- session state a shared child holds once (Issue 11 items 3 and 4) -----------------------------------

    async def subscribe(self, message: Message, sink: Sink, session: "ClientSession") -> int:
        """Issue 11 item 3: only a URI's first subscriber reaches the child; the rest are answered here."""
        uri = _uri_of(message, sink)
        if uri is None:
            return 0
        if self._subscribed(uri):  # this session already (idempotent), or another one
            session.subscriptions.add(uri)
            sink.deliver(result(message["id"], {}))
            return 0
        session.subscriptions.add(uri)  # before the child answers: a second subscriber meanwhile is not forwarded
        return await self.forward(message, _Subscribing(sink, session, uri), session=session)

    async def unsubscribe(self, message: Message, sink: Sink, session: "ClientSession") -> int:
        """Issue 11 item 3: only a URI's last subscriber leaving reaches the child; the others keep their updates."""
        uri = _uri_of(message, sink)
        if uri is None:
            return 0
        held = uri in session.subscriptions
        session.subscriptions.discard(uri)
        if not held or self._subscribed(uri):
            sink.deliver(result(message["id"], {}))
            return 0
        return await self.forward(message, sink, session=session)

    async def set_log_level(self, message: Message, sink: Sink, session: "ClientSession") -> None:
        """Issue 11 item 4: a session's level filters what it gets; the child runs at the most verbose one asked."""
        level = (message.get("params") or {}).get("level")
        if level not in SEVERITY:
            sink.deliver(error(message["id"], INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}"))
            return
        session.log_level = level
        sink.deliver(result(message["id"], {}))
        await self._apply_log_level()

    async def release(self, session: "ClientSession") -> None:
        """A session left (ended, expired, its client vanished): unsubscribe the child from URIs nobody else holds
        and move its level to what the remaining sessions asked for. Call after removing it from `sessions`."""
        for uri in sorted(session.subscriptions):
            if not self._subscribed(uri):
                await self._tell("resources/unsubscribe", {"uri": uri})
        session.subscriptions.clear()
        await self._apply_log_level()

    def _subscribed(self, uri: str) -> bool:
        """Whether any session or listen stream of this child holds `uri` (the refcount is their own sets)."""
        return any(uri in session.subscriptions for session in self.sessions) or any(
            uri in listener.uris for listener in self.listeners
        )

    async def listen(self, listener: Listening) -> None:
        """Issue 11 item 5: a listen stream joins; the child is subscribed to each URI nobody held yet.

        Returns once the child answered those subscribes (each bounded by the call timeout), so an update the
        child sends after the stream's acknowledgment is one it knows to send. A URI the child refuses leaves
        `listener.uris` (the acknowledgment does not list it).
        """
        new = [uri for uri in sorted(listener.uris) if not self._subscribed(uri)]
        self.listeners.add(listener)
        answers = await asyncio.gather(*(self._ask("resources/subscribe", {"uri": uri}) for uri in new))
        for uri, answer in zip(new, answers, strict=True):
            if answer is None or "error" in answer:
                listener.uris.discard(uri)

    def unlisten(self, listener: Listening) -> None:
        """Issue 11 item 5: a listen stream left; the child is unsubscribed from URIs nobody else holds."""
        self.listeners.discard(listener)
        for uri in sorted(listener.uris):
            if not self._subscribed(uri):
                self._spawn(self._tell("resources/unsubscribe", {"uri": uri}))

    async def _apply_log_level(self) -> None:
        """Set the child to the most verbose level any session asked for, if it changed and the child logs."""
        asked = [session.log_level for session in self.sessions if session.log_level is not None]
        capabilities = (self.init_result or {}).get("capabilities") or {}
        if not asked or "logging" not in capabilities:
            return
        lowest = min(asked, key=SEVERITY.__getitem__)
        if lowest != self.child_log_level:
            self.child_log_level = lowest
            await self._tell("logging/setLevel", {"level": lowest})

    async def _ask(self, method: str, params: Message) -> Message | None:
        """A request of the gateway's own and the child's answer (an error on timeout); None if it was not sent."""
        slot = await self._tell(method, params)
        return parsed(await slot.future) if slot is not None else None

    async def _tell(self, method: str, params: Message) -> ResponseSlot | None:
        """Send the child a request of the gateway's own; its answer reaches the returned slot (bounded by the
        call timeout, failed at once if the child exits), None if it could not be sent."""
        child = self.child
        if not self.ready or child is None:
            return None
        request_id = self._new_id()
        slot = ResponseSlot()
        pending = Pending(slot, request_id, method, None, internal=True)
        pending.sent = pending.heard = self.clock.now()
        pending.timer = self.clock.call_later(self.timeout_s, self._expire, request_id)
        self.pending[request_id] = pending
        try:
            await child.send(dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        except ChildUnavailable:
            if request_id in self.pending:
                self._finish(request_id, None)
            return None
        return slot

    def _child_log(self, message: Message) -> None:
        """Issue 11 item 4: a log message goes where it provably belongs, never to a client it may not concern.

        A per-session child's logs are its owner's; with "shareLogs" every session gets them. Otherwise: the call
        whose progress token the message carries in `params._meta.progressToken` (on that call's stream), else the
        one client call in flight on the child; with none or several, no client gets it. Each session's own
        `logging/setLevel` filters what reaches it.
        """
        params = message.get("params")
        level = params.get("level") if isinstance(params, dict) else None
        if self.share_logs or self.owner is not None:
            for session in self.sessions:
                if _wants(session, level):
                    session.push(message)
            return
        pending = self._log_owner(params)
        if pending is None:
            log.debug("server %s: a log message (level %r) belongs to no one call; kept from clients", self.name, level)
            return
        owner = pending.session
        if owner is not None and not _wants(owner, level):
            return
        if pending.client_token is not None and pending is self._by_token.get(_meta_token(params)):
            pending.sink.notify(message)  # the call's own stream (Streamable POST, HTTP+SSE session, modern SSE)
        elif owner is not None:
            owner.push(message)  # the session's stream (Streamable GET, HTTP+SSE)
        else:
            pending.sink.notify(message)

    def _log_owner(self, params: Any) -> Pending | None:
        """The one client call a log message belongs to: named by its progress token, or the only one in flight."""
        named = self._by_token.get(_meta_token(params))
        if named is not None:
            return named
        found: Pending | None = None
        for pending in self.pending.values():
            if not pending.internal:
                if found is not None:
                    return None
                found = pending
        return found

    async def _hold(self, client_id: Any, session: "ClientSession | None") -> bool:
        """Wait for a restarting shared child to be ready again (Issue 9 item 2); True if it is, in time."""
        handle = self.handle
        if handle is None or self.hold_s <= 0 or not handle.recovering:
            return False
        if session is not None:
            session.inflight[client_id] = HELD  # counted against the in-flight cap while it waits
        try:
            await handle.wait_ready(self.hold_s)
        finally:
            if session is not None and session.inflight.get(client_id) == HELD:
                del session.inflight[client_id]
        return self.ready and (session is None or not session.closed.is_set())

    def _unavailable(self, client_id: Any) -> Message:
        """The error of a call the child cannot take now, with retryAfterSeconds when it is expected back."""
        handle = self.handle
        retry_after_s = handle.retry_after_s() if handle is not None else None
        if handle is None or retry_after_s is None:
            return error(client_id, SERVER_UNAVAILABLE, f"server {self.name!r} is not running")
        text = f"server {self.name!r} is not running (state: {handle.state}); retry in {retry_after_s} s"
        return error(client_id, SERVER_UNAVAILABLE, text, {"retryAfterSeconds": retry_after_s})

    async def notify_child(self, message: Message) -> None:
        """Forward a client notification as is (only meaningful for a session's own child)."""
        if self.child is not None:
            with contextlib.suppress(ChildUnavailable):
                await self.child.send(dumps(message))

    async def cancel(self, request_id: int, reason: str) -> None:
        """Stop waiting for `request_id` and tell the child, per the MCP cancellation rules."""
        pending = self.pending.get(request_id)
        if pending is None:
            return
        self._finish(request_id, None)
        pending.sink.cancelled(error(pending.client_id, REQUEST_CANCELLED, "Request cancelled"))
        await self.notify_child(notification("notifications/cancelled", {"requestId": request_id, "reason": reason}))

    def cancel_soon(self, request_id: int, reason: str) -> None:
        """`cancel` from a plain callback."""
        self._spawn(self.cancel(request_id, reason))

    async def answer_server_request(self, message: Message) -> bool:
        """A client's response to a child→client request: restore the child's id and pass it on."""
        child_id = self._server_requests.pop(message.get("id"), _MISSING)  # type: ignore[arg-type]
        if child_id is _MISSING:
            return False
        message["id"] = child_id
        await self.notify_child(message)
        return True

    def asked_as(self, our_id: str) -> Any:
        """The id the child gave a request still waiting on its client (Issue 11 item 5: the input request's key)."""
        return self._server_requests.get(our_id)

    # --- internals -----------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        """Run a fire-and-forget send, holding a strong reference (asyncio keeps only weak ones)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _child_response(self, message: Message) -> None:
        request_id = message["id"]
        if self.handle is not None:
            self.handle.liveness.answered()  # any answer, even a late one, shows the child is alive
        if request_id not in self.pending:
            log.debug("server %s: answer to unknown or cancelled id %r dropped", self.name, request_id)
            return
        self._finish(request_id, message)

    def _finish(self, request_id: int, message: Message | None) -> None:
        pending = self.pending.pop(request_id)
        if pending.method == "tools/list" and message is not None:
            self._remember_tools(message)
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.client_token is not None:
            self._by_token.pop(request_id, None)
        if pending.session is not None:
            pending.session.inflight.pop(pending.client_id, None)
        if message is not None:
            message["id"] = pending.client_id
            pending.sink.deliver(message)

    def _remember_tools(self, message: Message) -> None:
        tools = (message.get("result") or {}).get("tools")
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    self.tool_schemas[tool["name"]] = ToolSchema(tool.get("inputSchema"))

    def _expire(self, request_id: int) -> None:
        """A call's timer fired: time it out, or re-arm it if progress arrived since (Issue 11 item 2).

        Progress only moves `heard`; the timer is re-armed here, once per period, not on every notification.
        """
        pending = self.pending.get(request_id)
        if pending is None:
            return
        now = self.clock.now()
        limit = expired_limit(pending.sent, pending.heard, now, self.timeout_s, self.max_total_s)
        if limit is None:
            due = min(pending.heard + self.timeout_s, pending.sent + self.max_total_s)
            pending.timer = self.clock.call_later(max(due - now, 0.0), self._expire, request_id)
            return
        self._finish(request_id, error(pending.client_id, REQUEST_TIMEOUT, *self._timeout_text(pending, limit)))
        if self.handle is not None:
            self.handle.liveness.unanswered()  # Issue 9 item 3: call timeouts count towards `unresponsive`
        cancelled = notification("notifications/cancelled", {"requestId": request_id, "reason": "timeout"})
        self._spawn(self.notify_child(cancelled))

    def _timeout_text(self, pending: Pending, limit: str) -> tuple[str, Message]:
        """The timeout error's message and data, naming the limit that fired (Issue 11 item 2)."""
        if limit == TOTAL:
            seconds = self.max_total_s
            text = (
                f"server {self.name!r} did not finish {pending.method} within {seconds:g} s, its maximum total time "
                "(maxTotalSeconds / REQUEST_MAX_TOTAL_S), although it reported progress"
            )
        else:
            seconds = self.timeout_s
            since = "of its last progress notification" if pending.heard > pending.sent else ""
            text = f"server {self.name!r} did not answer {pending.method} within {seconds:g} s {since}".rstrip()
            text += " (idle timeout: timeoutSeconds / REQUEST_TIMEOUT_S)"
        return text, {"timeout": limit, "seconds": seconds}

    def _child_progress(self, message: Message) -> None:
        params = message.get("params")
        if not isinstance(params, dict):
            return
        pending = self._by_token.get(params.get("progressToken"))  # type: ignore[arg-type]
        if pending is None:
            return
        pending.heard = self.clock.now()  # progress resets the idle timeout (the spec's MAY), not the total maximum
        params["progressToken"] = pending.client_token
        pending.sink.notify(message)

    def _child_request(self, message: Message) -> None:
        if message.get("method") == "ping":
            self._spawn(self.notify_child(result(message["id"], {})))
            return
        owner = self.owner
        if owner is None or owner.closed.is_set():
            text = "client requests (sampling, elicitation, roots) need isolation: per-session on this server"
            self._spawn(self.notify_child(error(message["id"], METHOD_NOT_FOUND, text)))
            return
        our_id = f"bastion-{self._new_id()}"
        self._server_requests[our_id] = message["id"]
        owner.server_request({**message, "id": our_id})  # on the stream of its call (Issue 11 item 6)


_MISSING = object()


class _Subscribing:
    """The sink of a forwarded first subscribe: a refusal by the child takes the session's subscription back."""

    __slots__ = ("inner", "session", "uri")

    def __init__(self, inner: Sink, session: "ClientSession", uri: str) -> None:
        self.inner, self.session, self.uri = inner, session, uri

    def deliver(self, message: Answer) -> None:
        if is_error(message):
            self.session.subscriptions.discard(self.uri)
        self.inner.deliver(message)

    def notify(self, message: Message) -> None:
        self.inner.notify(message)

    def cancelled(self, message: Message) -> None:
        self.session.subscriptions.discard(self.uri)
        self.inner.cancelled(message)


def _uri_of(message: Message, sink: Sink) -> str | None:
    """The URI of a subscribe / unsubscribe; a missing or non-string one is answered invalid params here."""
    uri = (message.get("params") or {}).get("uri")
    if isinstance(uri, str):
        return uri
    sink.deliver(error(message["id"], INVALID_PARAMS, "params.uri must be a string"))
    return None


def _wants(session: "ClientSession", level: Any) -> bool:
    """Whether `session` asked for messages of `level` (all until it sets one; an unknown level counts as severe)."""
    floor = session.log_level
    return floor is None or SEVERITY.get(level, len(LOG_LEVELS)) >= SEVERITY[floor]


def _meta_token(params: Any) -> Any:
    """The progress token a child put in a notification's `params._meta` to name the call it belongs to."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if isinstance(token, int) and not isinstance(token, bool) else None


IDLE, TOTAL = "idle", "total"  # which limit timed a call out (the error's data.timeout)


def expired_limit(sent: float, heard: float, now: float, idle_s: float, max_total_s: float) -> str | None:
    """Which limit a call in flight has passed at `now`: TOTAL first, then IDLE; None while it may go on.

    Pure (Issue 11 item 2): `sent` is when the call went to the child, `heard` its last progress notification (or
    `sent`). A call reporting progress lives past `idle_s`, never past `max_total_s`.
    """
    if now >= sent + max_total_s:
        return TOTAL
    if now >= heard + idle_s:
        return IDLE
    return None


def _strip_modern_meta(params: Message) -> None:
    meta = params.get("_meta")
    if isinstance(meta, dict):
        for key in MODERN_META_KEYS:
            meta.pop(key, None)
        if not meta:
            del params["_meta"]
