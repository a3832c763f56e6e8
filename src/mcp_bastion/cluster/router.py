"""The forwarding decision: after the pipeline (authenticated, authorized, counted), before the transports.

A request for a session another instance owns goes there, once; everything else is served here: requests without a
session, sessions of this instance, ids this cluster did not mint (the transport answers them 404), ids bound to
another principal (404 here, never forwarded), and every request that arrived as a hop (never forwarded again).
"""

import asyncio
from collections.abc import Callable
from urllib.parse import parse_qs

import orjson

from mcp_bastion.access import context_of
from mcp_bastion.cluster.forward import Forwarder
from mcp_bastion.cluster.registry import Registry
from mcp_bastion.cluster.session_ids import SessionIds
from mcp_bastion.errors import GatewayError, ShuttingDown
from mcp_bastion.middleware.hop import HOP_KEY, replay_body
from mcp_bastion.middleware.reply import headers_of, state
from mcp_bastion.relay.input_states import instance_of
from mcp_bastion.relay.sessions import SHUTDOWN_RETRY_AFTER_S, SessionGone
from mcp_bastion.transports.http import Request, end_stream, send_error
from mcp_bastion.types import ASGIApp, Receive, Scope, Send

SESSION_HEADER = b"mcp-session-id"
STATE_MARKER = b'"requestState"'  # only a body that holds this is parsed here (the transport parses it again)


class ClusterRouter:
    """Wraps the router: forwards requests for sessions held elsewhere, passes the rest on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        ids: SessionIds,
        registry: Registry,
        forwarder: Forwarder,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.closing = closing  # SIGTERM: a forwarded request starts no new work here either (503, as a direct one)
        self.ids = ids
        self.registry = registry
        self.forwarder = forwarder
        self.served_for_peers = 0  # hops this instance answered (a counter in /health)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get(HOP_KEY) is not None:
            await self._as_owner(scope, receive, send)
            return
        owner, by_state = self._elsewhere(scope), False
        if owner is None and _may_carry_state(scope):
            try:
                body = await Request(scope, receive, send).body(self.forwarder.max_body)
            except GatewayError as exc:
                await send_error(send, exc, None)
                return
            receive = replay_body(body, receive)
            owner, by_state = self._state_owner(body), True
        if owner is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._to(owner, Request(scope, receive, send), by_state)
        except GatewayError as exc:  # DependencyUnavailable too: Redis down, the owner cannot be looked up (503)
            if not state(scope).get("response_started"):
                await send_error(send, exc, None)
            else:
                await end_stream(send)

    async def _as_owner(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request another instance forwarded: served here, never forwarded again (refused while shutting down)."""
        self.served_for_peers += 1
        if self.closing():
            await send_error(send, ShuttingDown(SHUTDOWN_RETRY_AFTER_S))
            return
        await self.app(scope, receive, send)

    async def _to(self, owner: str, req: Request, by_state: bool) -> None:
        """Forward to `owner`; an owner that is gone makes its session 404, or its request state refused here."""
        url = await self.registry.url_of(owner)
        if url is None and by_state:  # the call's holder is gone: refused here as a state this one cannot use
            await self.app(req.scope, req.receive, req.send)
            return
        if url is None:
            raise SessionGone("Session not found")  # its owner left or died: the client starts a new session
        await self._forward(req, owner, url)

    async def _forward(self, req: Request, owner: str, url: str) -> None:
        """Forward, unless the owner's record expires first (frozen, cut off): then its sessions are gone (404), or
        the stream already under way ends, within the registry's bound instead of a read timeout."""
        work = asyncio.ensure_future(self.forwarder.forward(req, owner, url))
        gone = asyncio.ensure_future(self.registry.wait_gone(owner))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                await asyncio.wait({work})
        if work.cancelled():
            raise SessionGone("Session not found")
        work.result()

    def _state_owner(self, body: bytes) -> str | None:
        """Issue 11 item 5 in a cluster: the instance holding the call a 2026-07-28 retry's requestState names, when
        that is another one (the owner checks the rest: principal, server, method, expiry)."""
        if STATE_MARKER not in body:
            return None
        try:
            message = orjson.loads(body)
            sealed = message["params"]["requestState"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        instance = instance_of(self.ids.sealer, sealed, now=self.ids.wall())
        return instance if instance is not None and instance != self.ids.instance_id else None

    def _elsewhere(self, scope: Scope) -> str | None:
        """The instance that owns the request's session, when that is another one and the caller is its principal."""
        ctx = context_of(scope)
        name = ctx.route.name
        if name == "mcp":
            value = headers_of(scope).get(SESSION_HEADER)
            session_id = value.decode("latin-1") if value is not None else None
        elif name == "mcp.messages":
            found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_id")
            session_id = found[0] if found else None
        else:
            return None
        if not session_id:
            return None
        owner = self.ids.owner(session_id, ctx.principal.id if ctx.principal else None)
        if owner is None or owner.instance == self.ids.instance_id or not owner.same_principal:
            return None
        return owner.instance


def _may_carry_state(scope: Scope) -> bool:
    """A sessionless POST on an MCP route: a 2026-07-28 request, perhaps the retry of a multi-round-trip call."""
    return (
        scope["method"] == "POST" and context_of(scope).route.name == "mcp" and SESSION_HEADER not in headers_of(scope)
    )
