"""The forwarding decision: after the pipeline (authenticated, authorized, counted), before the transports.

A request for a session another instance owns goes there, once; everything else is served here: requests without a
session, sessions of this instance, ids this cluster did not mint (the transport answers them 404), ids bound to
another principal (404 here, never forwarded), and every request that arrived as a hop (never forwarded again).
"""

import asyncio
from urllib.parse import parse_qs

from mcp_bastion.access import context_of
from mcp_bastion.cluster.forward import Forwarder
from mcp_bastion.cluster.registry import Registry
from mcp_bastion.cluster.session_ids import SessionIds
from mcp_bastion.errors import GatewayError
from mcp_bastion.middleware.hop import HOP_KEY
from mcp_bastion.middleware.reply import headers_of, state
from mcp_bastion.relay.sessions import SessionGone
from mcp_bastion.transports.http import Request, end_stream, send_error
from mcp_bastion.types import ASGIApp, Receive, Scope, Send

SESSION_HEADER = b"mcp-session-id"


class ClusterRouter:
    """Wraps the router: forwards requests for sessions held elsewhere, passes the rest on."""

    def __init__(self, app: ASGIApp, *, ids: SessionIds, registry: Registry, forwarder: Forwarder) -> None:
        self.app = app
        self.ids = ids
        self.registry = registry
        self.forwarder = forwarder
        self.served_for_peers = 0  # hops this instance answered (a counter in /health)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get(HOP_KEY) is not None:
            self.served_for_peers += 1
            await self.app(scope, receive, send)
            return
        owner = self._elsewhere(scope)
        if owner is None:
            await self.app(scope, receive, send)
            return
        req = Request(scope, receive, send)
        try:
            url = await self.registry.url_of(owner)
            if url is None:
                raise SessionGone("Session not found")  # its owner left or died: the client starts a new session
            await self._forward(req, owner, url)
        except GatewayError as exc:  # DependencyUnavailable too: Redis down, the owner cannot be looked up (503)
            if not state(scope).get("response_started"):
                await send_error(send, exc, None)
            else:
                await end_stream(send)

    async def _forward(self, req: Request, owner: str, url: str) -> None:
        """Forward, unless the owner's record expires first (frozen, cut off): then its sessions are gone (404), or
        the stream already under way ends, within the registry's bound instead of a read timeout."""
        work = asyncio.ensure_future(self.forwarder.forward(req, url))
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
