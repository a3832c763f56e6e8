"""Issue 11 item 5: a per-session child's client requests, carried to 2026-07-28 clients as multi-round-trip requests.

The revision has no server→client requests. A request the child makes while serving a call (sampling/createMessage,
elicitation/create, roots/list) is answered to the client as an `InputRequiredResult`
`{"resultType": "input_required", "inputRequests": {KEY: {"method", "params"}}, "requestState": S}`; the client
retries the same request with `inputResponses` `{KEY: result}` and `requestState` S. KEY is the id the child gave its
request, as a string, so a child that names its requests names the keys; answers a client sends before they are
asked (on its first call) answer the child's requests with those keys at once, unknown keys are ignored.

An `InputBridge` is the call's sink across its rounds; between rounds it is parked in `input_states.InputStates`,
which seals the `requestState` that names it.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from mcp_bastion.errors import INVALID_PARAMS, INVALID_REQUEST, GatewayError, ProtocolError
from mcp_bastion.jsonrpc import Message, error, result
from mcp_bastion.protocol import CLIENT_CAPABILITIES_META, CLIENT_INFO_META, LATEST_HANDSHAKE_VERSION
from mcp_bastion.relay.backend import GATEWAY_INFO, Backend
from mcp_bastion.relay.sessions import ClientSession
from mcp_bastion.relay.sinks import ResponseSlot
from mcp_bastion.supervisor import Child

ERA = "modern"  # the era of the sessions that hold these children
INPUT_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})  # the spec lets only these need input
CAPABILITY = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
INPUT_REQUESTS_MAX = 32  # questions one call may have waiting on its client: a child asking more is refused past it
INPUT_GATHER_S = 0.05  # a child asking several things at once writes them back to back: one round carries them all


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
        elif len(self.asked) >= INPUT_REQUESTS_MAX:
            self._answer_child(our_id, None, f"at most {INPUT_REQUESTS_MAX} requests may wait on the client")
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


def with_id(answer: Any, request_id: Any) -> Any:
    """An answer under the id of the request waiting now (a large result kept as bytes gets it written in place)."""
    if isinstance(answer, dict):
        return {**answer, "id": request_id}
    answer.set_id(request_id)
    return answer
