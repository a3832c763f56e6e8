"""A request another instance of the cluster forwarded here (Issue 12): it carries a signed hop instead of a credential.

The instance the client reached already ran the whole pipeline (address, origin, limits, authentication,
authorization) and wrote its audit lines; what it forwards is a request for a session this instance owns. A valid hop
goes straight to the router with the principal it names; an invalid one is refused and audited, never passed on to
the ordinary stages (a hop header is no credential). Only the other instances' addresses may present a hop: from any
other address the header is stripped and the request takes the ordinary pipeline, like requests without it (an
outsider learns nothing of cluster mode and meets the address allowlist first).
"""

from collections.abc import Awaitable, Callable
from typing import NamedTuple

from mcp_bastion.access import CONTEXT_KEY, Principal, context_of
from mcp_bastion.audit import AuditLog
from mcp_bastion.errors import GatewayError, ProtocolError
from mcp_bastion.middleware.reply import refuse, state
from mcp_bastion.transports.http import Request
from mcp_bastion.types import ASGIApp, ASGIMessage, Receive, Scope, Send

HOP_HEADER = b"x-bastion-hop"
HOP_KEY = "mcp_bastion.hop"  # scope key: the instance that forwarded this request (set only for a valid hop)


class Hop(NamedTuple):
    """What a forwarding instance vouches for: who called, from where, under which request id, and itself."""

    principal: Principal
    client_ip: str
    request_id: str
    origin: str = ""


class HopRequest(NamedTuple):
    """What a hop signs of the request it travels with (headers as in the ASGI scope: lowercase names)."""

    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class HopError(GatewayError):
    """A hop that does not verify (forged, expired, another request's)."""

    http_status = 403


Verify = Callable[[str, HopRequest], Hop]  # (header value, the request) -> Hop, or HopError


class HopGate(NamedTuple):
    """Cluster mode's two checks of a hop: its source address is an instance's, and it verifies."""

    admits: Callable[[str], Awaitable[bool]]  # socket address -> whether it is one of the cluster's instances
    verify: Verify


class HopMiddleware:
    """Sends a request with a valid hop to `direct` (the router), past every other stage; refuses a bad hop."""

    def __init__(self, app: ASGIApp, *, direct: ASGIApp, gate: HopGate, max_body: int, audit: AuditLog) -> None:
        self.app = app
        self.direct = direct
        self.gate = gate
        self.max_body = max_body
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope["headers"] if k == HOP_HEADER]
        if not values:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else ""
        if not await self.gate.admits(address):  # not from an instance: no hop, an ordinary request
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != HOP_HEADER]
            state(scope).pop("headers", None)  # the parsed copy, if a stage made one, holds it too
            await self.app(scope, receive, send)
            return
        ctx = context_of(scope)
        body = await self._body(scope, receive, send)
        try:
            if body is None or len(values) != 1:
                raise HopError("unreadable hop")
            request = HopRequest(scope["method"], scope["path"], scope["query_string"], scope["headers"], body)
            hop = self.gate.verify(values[0].decode("latin-1"), request)
        except HopError as exc:
            self.audit.record(
                "cluster.hop.refused", outcome="denied", reason=exc.message, path=scope["path"],
                **{**ctx.who(), "ip": address},  # the socket's: the allowlist stage that would set it comes later
            )  # fmt: skip
            await refuse(scope, send, 403, "Forbidden", "The forwarded request does not verify")
            return
        scope[CONTEXT_KEY] = ctx._replace(request_id=hop.request_id, client_ip=hop.client_ip, principal=hop.principal)
        scope[HOP_KEY] = hop.origin
        await self.direct(scope, replay_body(body, receive), send)

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body (None past the cap or on a disconnect: the forwarder checked it against the same cap)."""
        try:
            return await Request(scope, receive, send).body(self.max_body)
        except ProtocolError:  # BodyTooLarge too
            return None


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body out once, then waits on the real one (for the disconnect)."""
    sent = False

    async def replay() -> ASGIMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
