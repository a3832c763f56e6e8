"""What the gateway does with one parsed client message, whatever transport carried it."""

from typing import Any

from mcp_bastion.errors import INVALID_REQUEST
from mcp_bastion.jsonrpc import Message, error, result
from mcp_bastion.protocol import negotiate_version
from mcp_bastion.relay import Backend, ClientSession, Gateway, Sink
from mcp_bastion.transports.policy import CallPolicy


def initialize_result(backend: Backend, message: Message) -> Message:
    """The InitializeResult a client gets: the child's cached one, at the version negotiated with this client."""
    cached = backend.init_result or {}
    params = message.get("params") or {}
    if backend.owner is not None:
        return dict(cached)  # the client's own child negotiated with the client's own initialize
    return {**cached, "protocolVersion": negotiate_version(params.get("protocolVersion"))}


async def request(
    backend: Backend,
    message: Message,
    sink: Sink,
    *,
    session: ClientSession | None,
    policy: CallPolicy,
    modern: bool = False,
) -> int:
    """Answer locally or forward; returns the gateway id of a forwarded call (0 if answered here)."""
    method = message["method"]
    refusal = await policy.check(message)  # the one authorizer and the per-tool limits: every method
    if refusal is not None:
        sink.deliver(refusal)
        return 0
    sink = policy.wrap(message, sink)
    if method == "ping":
        sink.deliver(result(message["id"], {}))
        return 0
    if method == "initialize":
        sink.deliver(error(message["id"], INVALID_REQUEST, "the session is already initialized"))
        return 0
    if session is not None:  # session state a shared child holds once, kept per session (Issue 11 items 3 and 4)
        if method == "resources/subscribe":
            return await backend.subscribe(message, sink, session)
        if method == "resources/unsubscribe":
            return await backend.unsubscribe(message, sink, session)
        if method == "logging/setLevel":
            await backend.set_log_level(message, sink, session)
            return 0
    return await backend.forward(message, sink, session=session, strip_modern=modern)


async def notification(gateway: Gateway, session: ClientSession, message: Message) -> None:
    """A client notification: cancellations are mapped, the handshake ack is ours, the rest go to an own child."""
    method = message["method"]
    backend = session.backend
    if method == "notifications/cancelled":
        params = message.get("params") or {}
        request_id = session.inflight.get(params.get("requestId"))
        if request_id is not None:
            await backend.cancel(request_id, str(params.get("reason") or "cancelled by the client"))
        return
    if method == "notifications/initialized":
        return  # the gateway already sent its own to a shared child; an own child got it at start
    if session.own_backend:
        await backend.notify_child(message)


async def client_response(session: ClientSession, message: Message) -> bool:
    """A client's answer to a child→client request (sampling, elicitation, roots)."""
    return await session.backend.answer_server_request(message)


def request_id_of(value: Any) -> Any:
    """The id to put on an error for a message we could only partly read."""
    if isinstance(value, dict):
        candidate = value.get("id")
        if isinstance(candidate, (str, int)) and not isinstance(candidate, bool):
            return candidate
    return None
