"""Forwarding a request to the instance that owns its session, once, and streaming the answer back (SSE-safe).

The one HTTP client of the cluster (httpx2, which the `mcp` dependency brings). The request goes to the owner's
advertised URL, never back through the balancer; it carries the signed hop instead of the client's credential
(Authorization and cookies are dropped), so the owner cannot forward it again. The answer is passed through byte for
byte as it comes: a JSON answer, an SSE stream for as long as it lasts, the owner's status and headers.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from mcp_bastion.access import context_of
from mcp_bastion.cluster.hop import HopSigner
from mcp_bastion.errors import GatewayError
from mcp_bastion.middleware.headers import BASE_HEADERS, HSTS
from mcp_bastion.middleware.hop import HOP_HEADER, Hop
from mcp_bastion.relay.sessions import SessionGone
from mcp_bastion.transports.http import Disconnect, Request, end_stream

FORWARD_CONNECT_S = 1.0  # a peer on the same network accepts in milliseconds; longer means it is gone or cut off
FORWARD_WRITE_S = 10.0  # sending a request body (at most MAX_BODY_BYTES) to a peer
FORWARD_POOL_S = 5.0  # waiting for a free pooled connection to a peer
FORWARD_READ_SLACK_S = 30.0  # beyond the longest a call or a stream's keepalive may keep a peer silent
FORWARD_MAX_CONNECTIONS = 1000  # open connections to peers at once (each open stream holds one)
# A JSON answer up to this size is read whole before its head is sent (an answer is either all there or not at all
# for the balancer, which may then retry); larger ones and streams are passed on as they come.
WHOLE_ANSWER_MAX_BYTES = 1024 * 1024
FORWARD_KEEPALIVE = 100  # idle pooled connections kept per instance: forwarding does not pay a handshake each time
# Request headers that describe this connection, the client's credential (the hop replaces it), or the client's
# address (the hop carries the address the first instance believed): never sent on.
DROPPED_REQUEST = frozenset(
    {
        b"host", b"authorization", b"cookie", b"connection", b"keep-alive", b"transfer-encoding", b"te",
        b"trailer", b"upgrade", b"proxy-authorization", b"proxy-connection", b"content-length",
        b"x-forwarded-for", b"forwarded", b"x-real-ip", HOP_HEADER,
    }
)  # fmt: skip
# Response headers this instance's own pipeline sets (security headers, request id) or that describe the hop.
DROPPED_RESPONSE = frozenset(
    {
        b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"x-request-id", HSTS[0],
        *(n for n, _ in BASE_HEADERS),
    }
)  # fmt: skip


class OwnerUnreachable(GatewayError):
    """The session's owner is registered but does not answer (503: the client retries, or the owner's record expires
    and the session answers 404)."""

    http_status = 503
    retry_after_s = 1


class Forwarder:
    """Sends requests on to their session's owner; one connection pool per instance."""

    def __init__(self, signer: HopSigner, *, read_s: float, max_body: int) -> None:
        self.signer = signer
        self.max_body = max_body
        timeout = httpx2.Timeout(connect=FORWARD_CONNECT_S, read=read_s + FORWARD_READ_SLACK_S, write=FORWARD_WRITE_S,
                                 pool=FORWARD_POOL_S)  # fmt: skip
        limits = httpx2.Limits(max_connections=FORWARD_MAX_CONNECTIONS, max_keepalive_connections=FORWARD_KEEPALIVE)
        # trust_env off: no proxy from the environment ever sees a hop
        self._client = httpx2.AsyncClient(timeout=timeout, limits=limits, trust_env=False, follow_redirects=False)
        self.forwarded = 0  # requests sent on (a counter in /health: proof that forwarding happens)

    async def forward(self, req: Request, base_url: str) -> None:
        """Forward one request to `base_url` and stream the owner's answer back.

        Raises:
            SessionGone: the owner does not accept connections any more (its sessions died with it).
            OwnerUnreachable: the owner did not answer in time.
            BodyTooLarge: the body is over MAX_BODY_BYTES.
        """
        scope = req.scope
        body = await req.body(self.max_body)
        ctx = context_of(scope)
        assert ctx.principal is not None  # forwarding comes after authentication
        method, path, query = scope["method"], scope["path"], scope.get("query_string", b"")
        hop = self.signer.sign(Hop(ctx.principal, ctx.client_ip, ctx.request_id), method, path, query, body)
        headers = [(k, v) for k, v in req.raw_headers if k not in DROPPED_REQUEST]
        headers.append((HOP_HEADER, hop.encode()))
        url = base_url + path + ("?" + query.decode("latin-1") if query else "")
        request = self._client.build_request(method, url, headers=headers, content=body)
        self.forwarded += 1
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.ConnectError:
            raise SessionGone("Session not found") from None  # refused: nobody listens there, its sessions are gone
        except httpx2.TransportError:
            raise OwnerUnreachable("the instance holding this session did not answer; retry") from None
        try:
            await self._relay(req, response)
        finally:
            await response.aclose()

    async def _relay(self, req: Request, response: Any) -> None:
        """Pass the owner's answer on as it comes; a client that leaves ends the upstream request too."""
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in DROPPED_RESPONSE]
        first = b""
        chunks = response.aiter_raw()  # one iterator: the head read below and the pump share it
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            first, whole = await _head_of(chunks)
            if whole:  # head and body in one go: no half answer if this instance dies in between
                headers.append((b"content-length", str(len(first)).encode()))
                await req.send({"type": "http.response.start", "status": response.status_code, "headers": headers})
                await req.send({"type": "http.response.body", "body": first})
                return
        await req.send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        if first:
            await req.send({"type": "http.response.body", "body": first, "more_body": True})
        disconnect = Disconnect(req.receive)
        pump = asyncio.ensure_future(self._pump(req, chunks))
        disconnect.on_disconnect = lambda: _cancel(pump)
        try:
            await asyncio.wait({pump})
        finally:
            disconnect.close()
            pump.cancel()
        failure = None if pump.cancelled() else pump.exception()
        if failure is not None and not isinstance(failure, (httpx2.TransportError, OSError)):
            raise failure  # the owner dying mid-answer just ends the answer; anything else is ours to report
        await end_stream(req.send)

    async def _pump(self, req: Request, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            await req.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _cancel(task: "asyncio.Future[None]") -> None:
    task.cancel()


async def _head_of(stream: AsyncIterator[bytes]) -> tuple[bytes, bool]:
    """Up to WHOLE_ANSWER_MAX_BYTES of a (JSON) answer, and whether that is all of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        chunks.append(chunk)
        size += len(chunk)
        if size > WHOLE_ANSWER_MAX_BYTES:
            return b"".join(chunks), False
    return b"".join(chunks), True
