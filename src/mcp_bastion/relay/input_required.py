"""Issue 11 item 5: a per-session child's client requests, carried to 2026-07-28 clients as multi-round-trip requests.

The revision has no server→client requests. A request the child makes while serving a call (sampling/createMessage,
elicitation/create, roots/list) is answered to the client as an `InputRequiredResult`
`{"resultType": "input_required", "inputRequests": {KEY: {"method", "params"}}, "requestState": S}`; the client
retries the same request with `inputResponses` `{KEY: result}` and `requestState` S. KEY is the id the child gave its
request, as a string, so a child that names its requests names the keys; answers a client sends before they are
asked (on its first call) answer the child's requests with those keys at once, unknown keys are ignored.

Between rounds the call stays in flight on the client's own child (a gateway session never handed out), held by an
`InputStates` entry: single use, `ttl_s` (INPUT_STATE_TTL_S), INPUT_STATES_PER_PRINCIPAL and INPUT_STATES_MAX. The
child is stopped when the state expires, when the call ends (answered, failed, cancelled) or its client leaves.

`requestState` is sealed (`sealing.Sealer`, purpose REQUEST_STATE_PURPOSE) over the state's id, the server, a hash of
the principal, the method and the instance holding the child. It is refused with -32602 (HTTP 400, `data.reason`)
when it does not open (`forged`, `expired`), names another server or principal (`other-server`, `other-principal`),
was used already or its call ended (`replayed`), or comes with another request than the one it answers
(`other-request`). One issued by another instance of a cluster is refused the same way with `data.reason`
`other-instance` and `data.instance`, the instance that holds the child: a forwarder routes on `instance_of(...)`
before a request gets that far.
"""

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from mcp_bastion.errors import INVALID_PARAMS, INVALID_REQUEST, GatewayError, ProtocolError, QuotaExceeded
from mcp_bastion.jsonrpc import Message, error, result
from mcp_bastion.protocol import CLIENT_CAPABILITIES_META, CLIENT_INFO_META, LATEST_HANDSHAKE_VERSION
from mcp_bastion.relay.backend import GATEWAY_INFO, Backend
from mcp_bastion.relay.gateway import Gateway
from mcp_bastion.relay.sessions import ClientSession
from mcp_bastion.relay.sinks import ResponseSlot
from mcp_bastion.sealing import Sealer, SealError
from mcp_bastion.security import token_hash
from mcp_bastion.supervisor import Child, Clock
from mcp_bastion.supervisor.clock import Cancellable

ERA = "modern"  # the era of the sessions that hold these children
INPUT_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})  # the spec lets only these need input
CAPABILITY = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
REQUEST_STATE_PURPOSE = "mcp-bastion request-state v1"
INPUT_STATE_TTL_S = 120.0  # a person answering an elicitation takes seconds to minutes; a child waits no longer
INPUT_STATES_PER_PRINCIPAL = 8  # each holds a running child: one caller parks only a few at once
INPUT_STATES_MAX = 128  # every caller together (MAX_SESSIONS bounds the children too)
INPUT_RETRY_AFTER_S = 5  # a parked state frees when its client answers or it expires
INPUT_GATHER_S = 0.05  # a child asking several things at once writes them back to back: one round carries them all
PRINCIPAL_HASH_CHARS = 16  # the principal is bound by a hash prefix: the client can read a sealed payload
INSTANCE_ID_BYTES = 8


def new_instance_id() -> str:
    """A per-process instance id (cluster mode passes its configured one instead)."""
    return secrets.token_hex(INSTANCE_ID_BYTES)


def instance_of(sealer: Sealer, sealed: Any, *, now: float) -> str | None:
    """The instance holding the child of a requestState (for a cluster forwarder); None if it does not open."""
    try:
        payload = sealer.open(REQUEST_STATE_PURPOSE, sealed, now=now)
    except SealError:
        return None
    instance = payload.get("instance")
    return instance if isinstance(instance, str) else None


class StateRefused(ProtocolError):
    """A requestState this instance will not take (-32602); `reason` goes to the audit line."""

    def __init__(self, text: str, reason: str, **data: Any) -> None:
        super().__init__(f"invalid requestState: {text}", code=INVALID_PARAMS, data={"reason": reason, **data})
        self.reason = reason


def target_of(message: Message) -> Any:
    """What a request is about (a tool or prompt name, a resource URI): a retry must name the same."""
    params = message.get("params") or {}
    return params.get("uri") if message["method"] == "resources/read" else params.get("name")


def input_responses(params: Message) -> dict[str, Message]:
    """The `inputResponses` of a request: an object of objects (absent or null: none).

    Raises:
        ProtocolError: -32602 for anything else.
    """
    responses = params.get("inputResponses")
    if responses is None:
        return {}
    if not isinstance(responses, dict) or not all(isinstance(v, dict) for v in responses.values()):
        raise ProtocolError("inputResponses must be an object whose values are result objects", code=INVALID_PARAMS)
    return responses


def child_init(message: Message) -> Message:
    """The initialize a request's own child gets: the client's declared capabilities and info from its _meta."""
    meta = (message.get("params") or {}).get("_meta") or {}
    capabilities = meta.get(CLIENT_CAPABILITIES_META)
    info = meta.get(CLIENT_INFO_META)
    params = {
        "protocolVersion": LATEST_HANDSHAKE_VERSION,
        "capabilities": capabilities if isinstance(capabilities, dict) else {},
        "clientInfo": info if isinstance(info, dict) else GATEWAY_INFO,
    }
    return {"params": params}


async def known_tools(backend: Backend) -> None:
    """A fresh child's tool schemas before its first call (its tools/list, once), so Mcp-Param-* headers are checked
    against what it declares (2026-07-28), as on a shared child that learned them at start."""
    capabilities = (backend.init_result or {}).get("capabilities") or {}
    if backend.tool_schemas or "tools" not in capabilities:
        return
    slot = ResponseSlot()
    await backend.forward({"jsonrpc": "2.0", "id": "bastion-tools", "method": "tools/list"}, slot)
    await slot.future  # bounded by the call timeout; the backend remembers the schemas it answers


async def child_watch(backend: Backend, child: Child) -> None:
    """A request's own child that dies fails its call at once (no supervisor handle watches a per-session child), so
    a parked call's retry, or the request waiting, hears why instead of waiting for the call's timeout."""
    await child.exited.wait()
    if backend.child is child:
        backend.child_exited(f"its process exited with code {child.returncode}")


class InputBridge:
    """One call on a per-session child across the rounds of its multi-round-trip request (the call's sink)."""

    def __init__(self, session: ClientSession, message: Message, park: Callable[["InputBridge"], str]) -> None:
        self.session = session
        self.backend: Backend = session.backend
        self.method: str = message["method"]
        self.target = target_of(message)
        capabilities = child_init(message)["params"]["capabilities"]
        self.capabilities: Message = capabilities
        self.request_id = 0  # the call's gateway id at the child (0: not forwarded)
        self.state_id: str | None = None  # set while parked between rounds
        self.questions: dict[str, Message] = {}  # key → the child's request not answered yet ({"method", "params"})
        self.asked: dict[str, str] = {}  # key → the relay's id of that request (to answer it)
        self.preset: dict[str, Message] = {}  # the current request's answers not used yet
        self.answer: Any = None  # the call's end (result, error, cancellation), once it came
        self.view: ResponseSlot | None = None  # the HTTP request waiting now
        self.reply_id: Any = None
        self.reply_token: Any = None
        self._park = park
        self.watch: asyncio.Future[None] | None = None  # fails the call at once if the child dies (see InputStates)
        self._gather: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    def attach(self, view: ResponseSlot, message: Message, responses: dict[str, Message]) -> None:
        """A request (first or retry) waits on `view`: answer what the child asked with `responses`."""
        self.view = view
        self.reply_id = message["id"]
        self.reply_token = ((message.get("params") or {}).get("_meta") or {}).get("progressToken")
        self.preset = dict(responses)
        for key in [k for k in self.questions if k in self.preset]:
            del self.questions[key]
            self._answer_child(self.asked.pop(key), self.preset.pop(key))
        if self.answer is not None:
            self.deliver(self.answer)
        elif self.questions:
            self._schedule()

    def detach(self) -> None:
        """The waiting request was answered or went away."""
        self.view = None
        if self._gather is not None:
            self._gather.cancel()
            self._gather = None

    # --- Sink of the call at the child ----------------------------------------------------------------

    def deliver(self, message: Any) -> None:
        """The call ended: the request waiting gets it under its own id (a later retry does otherwise)."""
        self.answer = message
        if self.view is not None:
            self.view.deliver(with_id(message, self.reply_id))

    def notify(self, message: Message) -> None:
        """Progress goes to the request waiting now, under its own token."""
        params = message.get("params")
        if self.view is None or not isinstance(params, dict):
            return
        if self.reply_token is not None and "progressToken" in params:
            message = {**message, "params": {**params, "progressToken": self.reply_token}}
        self.view.notify(message)

    def cancelled(self, message: Message) -> None:
        """The call was cancelled (client gone, session ended): that is its end."""
        self.answer = message
        if self.view is not None:
            self.view.cancelled({**message, "id": self.reply_id})

    # --- the child asks ---------------------------------------------------------------------------------

    def child_asks(self, message: Message) -> None:
        """A child→client request during the call: answer it from what the client sent, or ask the client."""
        our_id = str(message["id"])
        method = message.get("method")
        key = str(self.backend.asked_as(our_id))
        capability = CAPABILITY.get(str(method))
        if self.method not in INPUT_METHODS or capability is None or capability not in self.capabilities:
            text = f"{method} cannot reach this client: it did not declare that capability, or {self.method} takes none"
            self._answer_child(our_id, None, text)
        elif key in self.asked:
            self._answer_child(our_id, None, f"the request id {key!r} is already waiting on the client")
        elif key in self.preset:
            self._answer_child(our_id, self.preset.pop(key))
        else:
            params = message.get("params")
            self.questions[key] = {"method": method, "params": params if isinstance(params, dict) else {}}
            self.asked[key] = our_id
            self._schedule()

    def _schedule(self) -> None:
        if self._gather is None and self.view is not None:
            self._gather = asyncio.get_running_loop().call_later(INPUT_GATHER_S, self._flush)

    def _flush(self) -> None:
        """Answer the waiting request with what the child asked: an InputRequiredResult with a fresh state."""
        self._gather = None
        view = self.view
        if view is None or view.future.done() or not self.questions or self.answer is not None:
            return
        try:
            sealed = self._park(self)
        except GatewayError as exc:
            view.deliver(error(self.reply_id, exc.jsonrpc_code, exc.message, exc.data))
            return
        value = {"resultType": "input_required", "inputRequests": dict(self.questions), "requestState": sealed}
        view.deliver(result(self.reply_id, value))

    def _answer_child(self, our_id: str, value: Message | None, refusal: str = "") -> None:
        reply = error(our_id, INVALID_REQUEST, refusal) if value is None else result(our_id, value)
        task = asyncio.ensure_future(self.backend.answer_server_request(reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class ChildAsks(ResponseSlot):
    """Where the session puts a child→client request of the call in flight (its POST stream slot): to the bridge."""

    __slots__ = ("bridge",)

    def __init__(self, bridge: InputBridge) -> None:
        super().__init__()
        self.bridge = bridge

    def notify(self, message: Message) -> None:
        """A child's request, never written to a 2026-07-28 stream."""
        if "id" in message and "method" in message:
            self.bridge.child_asks(message)


class InputStates:
    """The calls parked between rounds on this instance, and the sealed states that name them."""

    def __init__(
        self,
        gateway: Gateway,
        sealer: Sealer,
        instance_id: str,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.gateway = gateway
        self.sealer = sealer
        self.instance_id = instance_id
        self.clock = clock or gateway.supervisor.clock
        self.wall = wall
        self.ttl_s = INPUT_STATE_TTL_S
        self.per_principal = INPUT_STATES_PER_PRINCIPAL
        self.max_states = INPUT_STATES_MAX
        self.parked: dict[str, InputBridge] = {}
        self._timers: dict[str, Cancellable] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    async def open(
        self, server: str, message: Message, *, principal: str | None, credential: str | None
    ) -> InputBridge:
        """A fresh child for a request without requestState (initialized with the client's declared capabilities).

        Raises:
            UnknownServer, ChildUnavailable, AtCapacity, QuotaExceeded: as any session opening.
        """
        init = child_init(message)
        session = await self.gateway.open_session(
            server, era=ERA, principal=principal, init=init, credential=credential
        )
        bridge = InputBridge(session, message, self.park)
        session.post_streams[message["id"]] = ChildAsks(bridge)
        child = session.backend.child
        if child is not None:
            bridge.watch = asyncio.ensure_future(child_watch(session.backend, child))
        return bridge

    def park(self, bridge: InputBridge) -> str:
        """Keep `bridge` until its client answers (single use, `ttl_s`); returns its sealed requestState.

        Raises:
            QuotaExceeded: the principal, or the instance, holds its maximum of parked calls.
        """
        principal = bridge.session.principal
        held = sum(1 for b in self.parked.values() if b.session.principal == principal)
        if held >= self.per_principal or len(self.parked) >= self.max_states:
            limit = self.per_principal if held >= self.per_principal else self.max_states
            exc = QuotaExceeded(
                f"too many requests wait for input (limit {limit}); answer or abandon some first",
                quota="input_states",
                limit=limit,
                retry_after_s=INPUT_RETRY_AFTER_S,
            )
            self.gateway.quota_refused(exc, principal=principal, server=bridge.session.server)
            raise exc
        state_id = secrets.token_urlsafe(18)
        self.parked[state_id] = bridge
        bridge.state_id = state_id
        self._timers[state_id] = self.clock.call_later(self.ttl_s, self._expire, state_id)
        payload = {
            "id": state_id,
            "server": bridge.session.server,
            "principal": principal_hash(principal),
            "method": bridge.method,
            "instance": self.instance_id,
        }
        return self.sealer.seal(REQUEST_STATE_PURPOSE, payload, now=self.wall(), ttl_s=self.ttl_s)

    def claim(self, sealed: Any, *, server: str, principal: str | None, message: Message) -> InputBridge:
        """The parked call a retry's requestState names, taken out (single use).

        Raises:
            StateRefused: see the module docstring for each reason.
        """
        if not isinstance(sealed, str):
            raise StateRefused("it must be a string", "malformed")
        try:
            payload = self.sealer.open(REQUEST_STATE_PURPOSE, sealed, now=self.wall())
        except SealError as exc:
            reason = "expired" if "expired" in exc.message else "forged"
            raise StateRefused(exc.message, reason) from exc
        instance = payload.get("instance")
        if instance != self.instance_id:
            text = f"it was issued by gateway instance {instance!r}, which holds its call; this one cannot serve it"
            raise StateRefused(text, "other-instance", instance=instance)
        if payload.get("server") != server:
            raise StateRefused("it was issued for another server", "other-server")
        if payload.get("principal") != principal_hash(principal):
            raise StateRefused("it was issued to another caller", "other-principal")
        state_id = str(payload.get("id"))
        bridge = self.parked.get(state_id)
        if bridge is None:
            raise StateRefused("it was used already, or its call ended", "replayed")
        if bridge.method != message["method"] or bridge.target != target_of(message):
            raise StateRefused("a retry must repeat the request it answers (method and name)", "other-request")
        self._unpark(state_id)
        return bridge

    async def end(self, bridge: InputBridge) -> None:
        """The call is over (or abandoned): its child goes (with the call, if still in flight)."""
        if bridge.state_id is not None:
            self._unpark(bridge.state_id)
        if bridge.watch is not None:
            bridge.watch.cancel()
        await self.gateway.end_session(bridge.session)

    async def close(self) -> None:
        """Shutdown: end every parked call (its child goes) and wait for the endings under way."""
        for bridge in list(self.parked.values()):
            await self.end(bridge)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _unpark(self, state_id: str) -> None:
        bridge = self.parked.pop(state_id, None)
        if bridge is not None:
            bridge.state_id = None
        timer = self._timers.pop(state_id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, state_id: str) -> None:
        bridge = self.parked.get(state_id)
        if bridge is None:
            return
        session = bridge.session
        if self.gateway.audit is not None:
            self.gateway.audit.record(
                "session.expired",
                outcome="ended",
                reason="requestState not used in time",
                kind="input",
                principal=session.principal,
                server=session.server,
                session=session.public_id,
                ttl_s=self.ttl_s,
            )
        task = asyncio.ensure_future(self.end(bridge))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def with_id(answer: Any, request_id: Any) -> Any:
    """An answer under the id of the request waiting now (a large result kept as bytes gets it written in place)."""
    if isinstance(answer, dict):
        return {**answer, "id": request_id}
    answer.set_id(request_id)
    return answer


def principal_hash(principal: str | None) -> str:
    """What a sealed state says about its principal."""
    return token_hash(principal or "")[:PRINCIPAL_HASH_CHARS]
